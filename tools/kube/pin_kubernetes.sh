#!/usr/bin/env bash
# Points the Go module in DIR at k8s.io/kubernetes VERSION (e.g. v1.37.2). kubernetes replaces
# each of its staging modules (k8s.io/api, apimachinery, client-go, ...) with ./staging/src/...;
# a module that depends on it must pin each one to its published twin v0.Y.Z instead. The list
# is read from kubernetes' own go.mod so that it cannot go stale. Then run `go mod tidy` there.
#   tools/kube/pin_kubernetes.sh tools/kube v1.37.2
#   tools/kube/pin_kubernetes.sh tools/kube/v1.30 v1.30.14
set -euo pipefail
dir=${1:?usage: pin_kubernetes.sh DIR v1.Y.Z}
version=${2:?usage: pin_kubernetes.sh DIR v1.Y.Z}
cd "$dir"
staging=v0.${version#v1.}
gomod=$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
[ -f "$gomod" ] || { echo "pin_kubernetes: no go.mod for k8s.io/kubernetes@$version" >&2; exit 1; }
for module in $(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$gomod"); do
  go mod edit -replace="$module=$module@$staging"
done
go mod edit -require="k8s.io/kubernetes@$version"
