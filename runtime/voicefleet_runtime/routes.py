"""The runtime's HTTP paths, named once: the server, its middlewares and the operator's probes,
scrape annotations and ServiceMonitor all use these."""

from __future__ import annotations

TRANSCRIPTIONS_PATH = "/v1/audio/transcriptions"
TRANSLATIONS_PATH = "/v1/audio/translations"
LEGACY_TRANSCRIBE_PATH = "/transcribe"
SPEECH_PATH = "/v1/audio/speech"
VOICES_PATH = "/v1/audio/voices"
MODELS_PATH = "/v1/models"
HEALTH_PATH = "/healthz"
"""Liveness: only a failed model load makes it fail."""
READY_PATH = "/readyz"
"""Readiness: loaded, warmed up and not draining."""
METRICS_PATH = "/metrics"

INFERENCE_PATHS = frozenset(
    {TRANSCRIPTIONS_PATH, TRANSLATIONS_PATH, LEGACY_TRANSCRIBE_PATH, SPEECH_PATH}
)
"""POSTs that take an upload place, then (body complete, metadata checked) an admission slot."""
OPEN_PATHS = frozenset({HEALTH_PATH, READY_PATH, METRICS_PATH})
"""Probes and Prometheus: never behind the key, never refused while draining."""
API_DESCRIPTION_PATHS = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
"""FastAPI's description of the API, in all its forms: open, all alike (auth.py)."""
KNOWN_PATHS = INFERENCE_PATHS | OPEN_PATHS | {MODELS_PATH, VOICES_PATH}
"""Paths with their own metrics label; any other path counts as `other`."""
