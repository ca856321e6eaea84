"""One line about a failure the runtime works around (a compiler that cannot build, a kernel
that cannot run), for the warning that says what it does instead."""

from __future__ import annotations


def briefly(error: BaseException) -> str:
    """`Type: first line of the message` (compiler errors run to pages)."""
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
