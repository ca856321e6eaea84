#!/usr/bin/env bash
# bench/gpu_batching.py on the device tool's machine (nvidia-h200-x2), from the repo root.
#
# The machine is bare and reaches nothing: what the run needs beyond the checkout travels in
# .device/ (git-ignored; bench/device/make_kit.sh builds it), at most 64 MiB a call, in calls
# made back to back while the machine is warm:
#   bench/device/run_gpu_batching.sh smoke .device/kit1   # keep kit1, install wheels, check
#   bench/device/run_gpu_batching.sh stash .device/kitN   # keep a part in /tmp across calls
#   bench/device/run_gpu_batching.sh run [bench args...]  # join, check sha256, run
#   bench/device/run_gpu_batching.sh profile [args...]    # or: bench/server_profile.py
# The run writes the table (and every row as JSON) under $OUT.
set -euo pipefail
KIT=/tmp/vfkit
SITE=/tmp/site
mkdir -p "$KIT"

stash() {
  for folder in "$@"; do cp -r "$folder"/* "$KIT"/; done
  du -sh "$KIT"/*
}

environment() {
  # A runtime and bench copied into .device/src (work not yet on main) win over the checkout's.
  SOURCE=$PWD
  [ -d .device/src/runtime ] && SOURCE=$PWD/.device/src
  export PYTHONPATH="$SITE:$SOURCE/runtime:$SOURCE/operator"
  export PYTHONUNBUFFERED=1
}

install_wheels() {
  [ -d "$SITE" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$SITE" "$KIT"/whl/*.whl
}

smoke() {
  stash "$@"
  install_wheels
  environment
  nvidia-smi -L
  python3 -c 'import torch, transformers, fastapi, uvicorn, av, jiwer, multipart
print("torch", torch.__version__, "transformers", transformers.__version__,
      "fastapi", fastapi.__version__, "GPUs", torch.cuda.device_count())'
}

prepare() {
  for folder in .device/kit*; do [ -d "$folder" ] && cp -r "$folder"/* "$KIT"/; done
  if [ ! -d /tmp/vf ]; then
    (cd "$KIT" && cat part* > vfkit.tar && sha256sum -c vfkit.sha256 && tar xf vfkit.tar -C /tmp \
      && rm vfkit.tar)
  fi
  install_wheels
  environment
}

run() {
  prepare
  python3 "$SOURCE"/bench/gpu_batching.py --tiny-dir /tmp/vf/models/tiny.en --base-dir /tmp/vf/models/base \
    --jfk /tmp/vf/audio/jfk.flac --json "${OUT:-/tmp}/gpu_batching.json" "$@" 2>&1 \
    | tee "${OUT:-/tmp}/gpu_batching.txt"
}

profile() {
  prepare
  python3 "$SOURCE"/bench/server_profile.py --model /tmp/vf/models/tiny.en --jfk /tmp/vf/audio/jfk.flac \
    --py-spy "$SITE"/bin/py-spy --out "${OUT:-/tmp}/server_profile" "$@" 2>&1 \
    | tee "${OUT:-/tmp}/server_profile.txt"
}

command=$1
shift
case "$command" in
  smoke) smoke "$@" ;;
  stash) stash "$@" ;;
  run) run "$@" ;;
  profile) profile "$@" ;;
  *) echo "usage: $0 smoke DIR | stash DIR... | run [bench args...] | profile [args...]" >&2; exit 2 ;;
esac
