"""Every route's access policy is deliberate (auth.py), and no secret leaks from settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
from starlette.routing import Route

from tests.runtime.conftest import RunningServer
from voicefleet_runtime.routes import API_DESCRIPTION_PATHS, OPEN_PATHS


def test_every_route_is_open_by_policy_or_needs_the_key(tiny_server: RunningServer) -> None:
    with httpx.Client(base_url=tiny_server.base_url, timeout=30) as anonymous:
        schema = httpx.get(f"{tiny_server.base_url}/openapi.json", timeout=30).json()
        documented = {path.replace("{model_id}", "whisper-1") for path in schema["paths"]}
        for path in sorted(documented | OPEN_PATHS | API_DESCRIPTION_PATHS):
            method = (
                "POST" if path in schema["paths"] and "post" in schema["paths"][path] else "GET"
            )
            status = anonymous.request(method, path).status_code
            if path in OPEN_PATHS | API_DESCRIPTION_PATHS:
                assert status == 200, path
            else:
                assert status == 401, path
        assert anonymous.get("/no/such/route").status_code == 401  # no route map without a key


def test_the_app_has_no_route_the_policy_does_not_name() -> None:
    """A new route must be placed deliberately: open (auth.py) or behind the key (here)."""
    from tests.runtime.conftest import tiny_settings
    from voicefleet_runtime.app import create_app

    app = create_app(tiny_settings())
    # FastAPI's own routes (docs) are top-level; ours come through the included router.
    paths = {route.path for route in app.routes if isinstance(route, Route)}
    paths |= set(app.openapi()["paths"])
    inference_and_models = {
        "/v1/audio/transcriptions",
        "/v1/audio/translations",
        "/transcribe",
        "/v1/models",
        "/v1/models/{model_id}",
        "/v1/audio/speech",
        "/v1/audio/voices",
    }
    assert paths == OPEN_PATHS | API_DESCRIPTION_PATHS | inference_and_models


def test_a_settings_error_at_start_up_never_echoes_the_api_key(tmp_path: Path) -> None:
    secret = "sk-very-secret-value-0451"
    voicefleet = Path(sys.executable).with_name("voicefleet")
    env = {
        **os.environ,
        "VOICEFLEET_API_KEY": secret,
        "VOICEFLEET_API_KEY_FILE": str(tmp_path / "key"),
        "VOICEFLEET_PORT": "not-a-port",
    }
    result = subprocess.run(
        [str(voicefleet), "serve"], env=env, capture_output=True, timeout=60, check=False
    )
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 3, output
    assert "invalid settings" in output
    assert "port" in output
    assert secret[:6] not in output
