#!/usr/bin/env bash
# Pins the ground to one Kubernetes release: requires k8s.io/kubernetes at VERSION and adds one
# replace per staging module, taken from that release's own go.mod (its `./staging/src/...`
# replaces become `k8s.io/X => k8s.io/X v0.N.M`). Run it only to move to another release.
set -euo pipefail
VERSION=${1:?usage: pin-kubernetes.sh v1.37.2}
cd "$(dirname "$0")/.."
staging="v0.${VERSION#v1.}"
dir=$(go mod download -json "k8s.io/kubernetes@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
modules=$(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\1#p' "$dir/go.mod")
[ -n "$modules" ] || { echo "no staging replaces found in $dir/go.mod" >&2; exit 1; }
args=(-require="k8s.io/kubernetes@$VERSION")
for m in $modules; do args+=(-replace="$m=$m@$staging"); done
go mod edit "${args[@]}"
echo "$VERSION" > KUBERNETES_VERSION
go mod tidy
