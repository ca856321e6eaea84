#!/usr/bin/env bash
# Starts the cluster the tests use (etcd, kube-apiserver, controller manager, scheduler, kwok with
# fake CPU and GPU nodes, the VoiceService CRD) on 127.0.0.1 and prints its kubeconfig, so that
# kubectl, helm and `voicefleet operator` can be tried by hand. Ctrl-C stops it.
#   scripts/cluster.sh [--workdir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build_kube.sh
exec .venv/bin/python -m tests.cluster.controlplane "$@"
