#!/usr/bin/env bash
# The whole check: setup, lint, types, layering, then the test suite. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build_kube.sh  # the control plane of tests/cluster; cached, see README
export PATH="$PWD/.tools/bin:$PWD/.venv/bin:$PATH"
echo "== ruff";        ruff check .
echo "== ruff format"; ruff format --check .
echo "== mypy";        mypy && mypy bench scripts tests
echo "== import-linter"; lint-imports
echo "== crd up to date"
python -m voicefleet_operator.cli crd --check crds/voicefleet.io_voiceservices.yaml
python -m voicefleet_operator.cli crd --check charts/voicefleet/crds/voicefleet.io_voiceservices.yaml
echo "== pytest";      python -m pytest "$@"
