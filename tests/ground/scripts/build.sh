#!/usr/bin/env bash
# Builds the ground binary once per (Kubernetes version, ground sources) into the cache and prints
# its path. The first build compiles Kubernetes (several minutes on two cores); later ones are free.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${OUTBOUND_CACHE:-$HOME/.cache/outbound}"
K8S_VERSION=$(cat KUBERNETES_VERSION)
hash=$( (cat go.mod go.sum; find cmd/ground internal -name '*.go' ! -name '*_test.go' -print0 | sort -z | xargs -0 cat) | sha256sum | cut -c1-16)
out="$CACHE/bin/ground-$K8S_VERSION-$hash"
if [ ! -x "$out/ground" ]; then
  echo "ground: building $K8S_VERSION ($hash); the first build on a machine takes a while" >&2
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  pkg=k8s.io/component-base/version
  cpkg=k8s.io/client-go/pkg/version
  ld="-s -w"
  for p in $pkg $cpkg; do
    ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  mkdir -p "$out.tmp"
  GOFLAGS=-buildvcs=false CGO_ENABLED=0 go build -trimpath -ldflags="$ld" -o "$out.tmp/ground" ./cmd/ground
  rm -rf "$out" && mv "$out.tmp" "$out"
fi
echo "$out/ground"
