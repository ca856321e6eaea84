"""Running a Triton kernel where CI runs: in Triton's interpreter (TRITON_INTERPRET=1), in a
child process, because Triton reads the variable when a kernel is defined. The interpreter
runs the same kernel source the GPU compiles, with numpy."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch


def run_python(code: str, *arguments: str) -> None:
    """`python -c code arguments...` with the interpreter on; fails the test if it fails."""
    environment = os.environ | {"TRITON_INTERPRET": "1"}
    subprocess.run(
        [sys.executable, "-c", code, *arguments], check=True, env=environment, timeout=300
    )


def run_case(code: str, case: Mapping[str, object], folder: Path) -> dict[str, Any]:
    """Run `code` on `case`: it reads the case from sys.argv[1] (torch.load) and saves what
    it returns to sys.argv[2], which this returns."""
    torch.save(dict(case), folder / "case.pt")
    run_python(code, str(folder / "case.pt"), str(folder / "out.pt"))
    result: dict[str, Any] = torch.load(folder / "out.pt")
    return result
