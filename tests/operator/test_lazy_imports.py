"""The operator process never imports the runtime's serving stack: FastAPI (and Starlette), numpy,
or any speech engine. They cost the operator tens of MB of memory and a slower start, and it
only reads the runtime's facts (engines' precisions, voices' names, routes, budgets).

A fresh process imports the operator's entry module as `voicefleet operator` does, builds its
handler registry and the children of a real example VoiceService, and reports its modules.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SERVING_PACKAGES = (
    "fastapi",
    "starlette",
    "uvicorn",
    "numpy",
    "av",
    "faster_whisper",
    "ctranslate2",
    "torch",
    "onnxruntime",
)

BUILD_AND_REPORT = """
import json, sys
import yaml
from voicefleet_operator.cli import main  # the console script's entry point
from voicefleet_operator.main import build_registry
from voicefleet_operator.settings import OperatorSettings
from voicefleet_operator.builders.children import build_children
from voicefleet_operator.crd.models import parse_voiceservice

build_registry(OperatorSettings(standalone=True))
body = yaml.safe_load(open(sys.argv[1]))
body["metadata"].setdefault("namespace", "default")
body["metadata"]["uid"] = "00000000-0000-0000-0000-000000000001"
children = build_children(
    parse_voiceservice(body), servicemonitor_api=True, replicas=1, placement_index=0
)
print(json.dumps({"kinds": sorted(c["kind"] for c in children),
                  "packages": sorted({name.split(".")[0] for name in sys.modules})}))
"""


def test_the_operator_imports_no_serving_packages(repo_root: Path) -> None:
    example = repo_root / "examples" / "gpu-stt-and-tts.yaml"
    completed = subprocess.run(
        [sys.executable, "-c", BUILD_AND_REPORT, str(example)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=repo_root,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    packages = set(report["packages"])
    # The check means something only if the process really loaded the operator and built.
    assert {"kopf", "voicefleet_operator", "voicefleet_runtime"} <= packages
    assert "Deployment" in report["kinds"]
    assert packages.isdisjoint(SERVING_PACKAGES), packages & set(SERVING_PACKAGES)
