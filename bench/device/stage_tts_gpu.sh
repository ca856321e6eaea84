#!/usr/bin/env bash
# Stages bench/tts_gpu.py's kit for the device machine in DIR (default .device/tts, git-ignored):
# the runtime's code, the onnx2torch wheel for the baseline GPU path (bench/tts_onnx2torch.py;
# the image has onnx, torch and torchvision, not it),
# and `tts_gpu.py prepare`'s workload, voice and the packaged model in two halves (the model is
# 92 MB, over the 64 MiB one call carries: carry the folder with part1 only, copy it to /tmp
# there, then carry it with part2 in the next call while the machine is warm; the run checks
# the joined sha256).
#   bench/device/stage_tts_gpu.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${1:-.device/tts}
rm -rf "$dir"
mkdir -p "$dir/src" "$dir/whl"
cp -r runtime/voicefleet_runtime "$dir/src/"
find "$dir/src" -name __pycache__ -prune -exec rm -rf {} +
cp bench/tts_gpu.py bench/tts_workload.py bench/tts_onnx2torch.py "$dir/"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 -d "$dir/whl" onnx2torch==1.5.15
.venv/bin/python bench/tts_gpu.py prepare "$dir/data"
