#!/usr/bin/env bash
# Builds the Kubernetes control plane that the cluster tests run against, from the Go modules
# pinned in tools/kube (kube-apiserver, kube-controller-manager, kube-scheduler, etcd, kwok) and
# tools/kube/v1.30 (the oldest kube-apiserver the README claims), into .tools/kube/KEY/, where KEY
# hashes everything that decides the binaries. .tools/kube/current points at the newest build.
# A second run with the same KEY only checks. Go's module and build caches stay in their default
# places outside the clone (go env GOMODCACHE GOCACHE), so a fresh clone on the same machine
# rebuilds from a warm cache.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH" GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0
command -v go >/dev/null || { echo "build_kube: Go is not installed (need Go 1.26)" >&2; exit 1; }

key=$( (cat scripts/build_kube.sh; go version; find tools/kube -type f -not -name '*.md' | LC_ALL=C sort | xargs cat) \
  | sha256sum | cut -c1-16)
out=.tools/kube/$key
built() {
  local file
  for file in kube-apiserver kube-controller-manager kube-scheduler etcd kwok kube-apiserver-1.30 kwok-stages.yaml; do
    [ -e "$out/$file" ] || return 1
  done
}
if ! built; then
  start=$SECONDS
  echo "build_kube: building the control plane into $out (cold: tens of minutes; see README)"
  tmp=$out.partial
  rm -rf "$tmp" && mkdir -p "$tmp"
  # -p 2: two packages at a time; linking kube-apiserver alone takes about 2.5 GB.
  build() {
    # Stamp the version as Kubernetes' own release build does (/version, kubectl, helm read it).
    local version minor
    version=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
    minor=${version#v1.}
    go build -p 2 -trimpath -ldflags="-s -w \
      -X k8s.io/component-base/version.gitVersion=$version \
      -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor%%.*} \
      -X k8s.io/component-base/version.gitTreeState=clean" "$@"
  }
  (cd tools/kube && build -o "../../$tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler sigs.k8s.io/kwok/cmd/kwok ./cmd/etcd)
  (cd tools/kube/v1.30 && build -o "../../../$tmp/kube-apiserver-1.30" k8s.io/kubernetes/cmd/kube-apiserver)
  # kwok needs stages (how a fake node or pod moves on); these are kwok's own "fast" ones.
  kwok_dir=$(cd tools/kube && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  for stage in node/fast/node-initialize pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
    cat "$kwok_dir/kustomize/stage/$stage.yaml" && echo ---
  done > "$tmp/kwok-stages.yaml"
  rm -rf "$out" && mv "$tmp" "$out"
  # Earlier builds (other keys) are about 500 MB each and nothing uses them any more.
  find .tools/kube -mindepth 1 -maxdepth 1 -type d ! -name "$key" -exec rm -rf {} +
  echo "build_kube: built in $((SECONDS - start)) s"
fi
ln -sfn "$key" .tools/kube/current
