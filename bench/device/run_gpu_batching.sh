#!/usr/bin/env bash
# bench/gpu_batching.py on the device tool's machine (nvidia-h200-x2), from the repo root.
#
# The machine is bare and reaches nothing: what the run needs beyond the checkout travels in
# .device/ (git-ignored), at most 64 MiB a call. bench/device/README.md says how the kit is
# made; its parts are carried in back-to-back calls while the machine is warm:
#   bench/device/run_gpu_batching.sh stash .device/kit1     # keep a part in /tmp across calls
#   bench/device/run_gpu_batching.sh run [bench args...]    # join, check, install, run
# The run writes the table and every row as JSON under $OUT.
set -euo pipefail
KIT=/tmp/vfkit
mkdir -p "$KIT"

stash() {
  for folder in "$@"; do cp "$folder"/* "$KIT"/; done
  ls -la "$KIT"
}

run() {
  for folder in .device/kit*; do [ -d "$folder" ] && cp "$folder"/* "$KIT"/; done
  if [ ! -d /tmp/vf ]; then
    (cd "$KIT" && cat part* > vfkit.tar && sha256sum -c vfkit.sha256 && tar xf vfkit.tar -C /tmp \
      && rm vfkit.tar)
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site /tmp/vf/whl/*.whl
  # A runtime copied into .device/src (an engine not yet on main) wins over the checkout's.
  local source=$PWD
  [ -d .device/src/runtime ] && source=$PWD/.device/src
  export PYTHONPATH="/tmp/site:$source/runtime:$source/operator"
  export PYTHONUNBUFFERED=1
  nvidia-smi -L
  python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers",
transformers.__version__, "GPUs", torch.cuda.device_count())'
  set -o pipefail
  python3 bench/gpu_batching.py --tiny-dir /tmp/vf/models/tiny.en --base-dir /tmp/vf/models/base \
    --jfk /tmp/vf/audio/jfk.flac --json "${OUT:-/tmp}/gpu_batching.json" "$@" 2>&1 \
    | grep --line-buffered -v '^\[transformers\]' | tee "${OUT:-/tmp}/gpu_batching.txt"
}

command=$1
shift
case "$command" in
  stash) stash "$@" ;;
  run) run "$@" ;;
  *) echo "usage: $0 stash DIR... | run [bench args...]" >&2; exit 2 ;;
esac
