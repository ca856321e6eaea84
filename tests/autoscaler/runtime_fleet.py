"""Real `voicefleet serve` processes on loopback, standing in for a VoiceService's pods."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
VOICEFLEET = REPO_ROOT / ".venv" / "bin" / "voicefleet"


@dataclass(frozen=True)
class RuntimeProcess:
    pod: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def is_running(self) -> bool:
        return self.process.poll() is None
