"""Everything one app instance owns: settings, engine, admission, metrics, worker threads.

It lives on `app.state.runtime`; nothing is global, so tests can run several apps at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from voicefleet_runtime.admission import AdmissionController
from voicefleet_runtime.audio_workers import AudioDecoder, decode_process_count
from voicefleet_runtime.cache.results import ResultCache
from voicefleet_runtime.engine.base import (
    BatchingEngine,
    SpeechEngine,
    loaded,
    warm_up,
)
from voicefleet_runtime.metrics import RuntimeMetrics
from voicefleet_runtime.settings import RuntimeSettings
from voicefleet_runtime.tts.engine import SpeechEngine as TtsEngine
from voicefleet_runtime.tts.engine import TtsBatching, load_speech_engine
from voicefleet_runtime.uploads import UploadLimits, Uploads

logger = logging.getLogger("voicefleet.runtime")

EngineFactory = Callable[[RuntimeSettings], SpeechEngine]
TtsEngineFactory = Callable[[RuntimeSettings], TtsEngine]


def load_tts_engine(settings: RuntimeSettings) -> TtsEngine:
    return load_speech_engine(
        settings.tts_assets_dir,
        settings.tts_voices,
        settings.tts_threads,
        backend=settings.tts_engine,
        device=settings.tts_device,
        batching=TtsBatching(
            settings.tts_precision,
            settings.tts_max_batch,
            settings.tts_batch_wait_ms / 1000,
            settings.tts_compile,
        ),
    )


class RuntimeState:
    """Everything one app instance owns: settings, the engine once loaded, admission, metrics
    and the engine thread pool. It lives on `app.state.runtime`, so two apps in one process
    (as in the tests) share nothing."""

    def __init__(
        self,
        settings: RuntimeSettings,
        engine_factory: EngineFactory,
        tts_engine_factory: TtsEngineFactory = load_tts_engine,
    ) -> None:
        self.settings = settings
        self.engine_factory = engine_factory
        self.tts_engine_factory = tts_engine_factory
        self.metrics = RuntimeMetrics(settings.concurrency, settings.queue_size)
        self.admission = AdmissionController(
            settings.concurrency, settings.queue_size, on_change=self.metrics.observe_admission
        )
        self.uploads = Uploads(
            UploadLimits.from_settings(settings),
            settings.max_uploads_in_progress,
            on_change=self.metrics.uploads_in_progress.set,
            on_refusal=self.count_refusal,
        )
        self.metrics.upload_capacity.set(settings.max_uploads_in_progress)
        # One thread per engine slot: the admission semaphore never lets more in.
        self.executor = ThreadPoolExecutor(
            max_workers=settings.concurrency, thread_name_prefix="voicefleet-engine"
        )
        self.cache = ResultCache(settings, self.metrics)
        self.audio_decoder = AudioDecoder(0)
        """Decodes in the request's thread until the engine is loaded (nothing is admitted
        before): then, for an engine that batches requests, in processes (audio_workers.py)."""
        api_key = settings.resolved_api_key()
        self.api_key: str | None = api_key.get_secret_value() if api_key is not None else None
        self.engine: SpeechEngine | None = None
        """Speech-to-text, once loaded (never, with stt_enabled false)."""
        self.tts: TtsEngine | None = None
        """Text-to-speech, once loaded (never without tts_model)."""
        self.loaded_at: int = 0
        self.load_error: str | None = None
        self.load_failed = asyncio.Event()
        self._warmed_up = False

    @property
    def ready(self) -> bool:
        return self._warmed_up and not self.admission.draining

    def model_names(self) -> tuple[str, ...]:
        """Names a request may use for the loaded STT model; the first one is its id."""
        if self.engine is None:
            return ()
        names = [self.engine.model_id, self.settings.model, *self.settings.served_model_names]
        return tuple(dict.fromkeys(names))

    def tts_model_names(self) -> tuple[str, ...]:
        """Names a speech request may use for the loaded TTS model; the first one is its id."""
        if self.tts is None:
            return ()
        return tuple(dict.fromkeys([self.tts.model_id, *self.settings.tts_served_model_names]))

    def all_model_names(self) -> tuple[str, ...]:
        return (*self.model_names(), *self.tts_model_names())

    def _load_and_warm_up(self) -> tuple[SpeechEngine | None, TtsEngine | None]:
        engine = self._load_stt() if self.settings.stt_enabled else None
        batches = isinstance(engine, BatchingEngine)
        processes = decode_process_count(self.settings.decode_processes, batches)
        if processes:
            self.audio_decoder = AudioDecoder(processes)
            logger.info("decoding uploads in %d processes", processes)
        tts = self._load_tts() if self.settings.tts_model is not None else None
        return engine, tts

    def _load_tts(self) -> TtsEngine:
        started = time.monotonic()
        tts = self.tts_engine_factory(self.settings)
        info = tts.model.info
        self.metrics.model_info.labels(
            model=tts.model_id,
            backend=info.backend,
            device=info.device,
            compute_type=info.compute_type,
        ).set(1)
        if self.settings.warmup:
            tts.warm_up(next(iter(tts.voices.voices.values())))
        logger.info("text-to-speech ready in %.2f s", time.monotonic() - started)
        return tts

    def _load_stt(self) -> SpeechEngine:
        started = time.monotonic()
        engine = self.engine_factory(self.settings)
        load_seconds = time.monotonic() - started
        self.metrics.model_load_seconds.set(load_seconds)
        logger.info("loaded model %s in %.2f s", loaded(engine), load_seconds)
        if self.settings.warmup:
            warm_up(engine, self.settings.beam_size)
        return engine

    async def load(self) -> None:
        """Load in a thread so /healthz answers during a long load; record a failure."""
        loop = asyncio.get_running_loop()
        try:
            engine, tts = await loop.run_in_executor(self.executor, self._load_and_warm_up)
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            logger.error("the model could not be loaded: %s", self.load_error)
            self.load_failed.set()
            return
        self.engine = engine
        self.tts = tts
        if isinstance(engine, BatchingEngine):
            self.metrics.track_batching(engine.batch_stats, self.admission.snapshot)
        self.loaded_at = int(time.time())
        self._warmed_up = True
        if engine is not None:
            self.metrics.model_info.labels(
                model=engine.model_id,
                backend=engine.backend,
                device=engine.device,
                compute_type=engine.compute_type,
            ).set(1)
        self.metrics.ready.set(0 if self.admission.draining else 1)
        logger.info("ready")

    def count_refusal(self, reason: str) -> None:
        self.metrics.refusals.labels(reason=reason).inc()

    def start_draining(self) -> None:
        """Accepted requests run on; uploads still in progress are cut off (503)."""
        self.admission.start_draining()
        self.uploads.cut_off()
        self.metrics.ready.set(0)
        self.metrics.draining.set(1)
