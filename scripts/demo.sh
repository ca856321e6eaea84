#!/usr/bin/env bash
# Sets everything up, then runs the embedded default: the runtime serving the packaged
# tiny.en model on CPU, transcribing ../shared/audio/jfk.flac through its own HTTP API.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
