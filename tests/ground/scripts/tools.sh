#!/usr/bin/env bash
# Builds or installs the ground's third-party tools once per version into the cache, idempotently.
set -euo pipefail

CACHE="${OUTBOUND_CACHE:-$HOME/.cache/outbound}"
BIN="$CACHE/bin"
mkdir -p "$BIN"

VERSITYGW_VERSION=v1.8.0
S5CMD_VERSION=v2.3.0
RCLONE_VERSION=v1.76.0
HELM_VERSION=v3.22.0
MOTO_VERSION=5.2.5

AWSCLI_VERSION=1.46.3
# Prometheus 3.16 (its Go module is versioned v0.316.x): the server and promtool, for the chart's
# alert rules and dashboard queries. Built without service discovery plugins, which the tests
# never use (static targets) and which would triple the build.
PROMETHEUS_VERSION=v0.316.0
# crane (go-containerregistry): checks `make image`'s output and pushes it to a registry; the same
# library, at the same version in image/go.mod, writes the image (image/main.go).
CRANE_VERSION=v0.22.1
# runc runs the node's containers of registry images. Built with cgo (its nsenter is C) and with
# seccomp (Debian's libseccomp-dev, installed through apt when missing).
RUNC_VERSION=v1.5.3

# go_tool NAME MODULE VERSION [PACKAGE_DIR] [BUILD_TAGS]: build a module's command at an exact version into a
# per-version folder, then link the name. Building inside the downloaded module (instead of
# `go install m@v`) honours the module's own go.mod and replace directives, and never asks the
# proxy for version lists, which it refuses for some modules.
go_tool() {
  local name=$1 module=$2 version=$3 pkg=${4:-.} tags=${5:-}
  local dir="$BIN/$name-$version"
  if [ ! -x "$dir/$name" ]; then
    echo "tools: building $name $version (first time on this machine)" >&2
    local src
    src=$(GOFLAGS=-mod=mod go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [ -d "$src" ] || { echo "tools: could not download $module@$version" >&2; exit 1; }
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    (cd "$src" && GOWORK=off GOFLAGS="-buildvcs=false -mod=mod" CGO_ENABLED="${CGO:-0}" go build -trimpath -tags "$tags" -ldflags="-s -w" -o "$dir.tmp/$name" "$pkg")
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
  ln -sfn "$dir/$name" "$BIN/$name"
}

python_venv() {
  local venv="$CACHE/venv-moto$MOTO_VERSION"
  if [ ! -x "$venv/bin/moto_server" ] || [ ! -x "$venv/bin/aws" ]; then
    echo "tools: creating python venv with moto $MOTO_VERSION, boto3+awscrt, awscli" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
      "moto[server]==$MOTO_VERSION" "boto3[crt]" "awscli==$AWSCLI_VERSION"
  fi
  ln -sfn "$venv" "$CACHE/venv"
  for t in aws moto_server; do ln -sfn "$venv/bin/$t" "$BIN/$t"; done
}

want="${1:-all}"
case "$want" in
  all|s3)
    go_tool versitygw github.com/versity/versitygw "$VERSITYGW_VERSION" ./cmd/versitygw
    python_venv
    ;;&
  all|peers)
    go_tool s5cmd github.com/peak/s5cmd/v2 "$S5CMD_VERSION"
    go_tool rclone github.com/rclone/rclone "$RCLONE_VERSION"
    go_tool helm helm.sh/helm/v3 "$HELM_VERSION" ./cmd/helm
    ;;&
  all|prometheus)
    go_tool promtool github.com/prometheus/prometheus "$PROMETHEUS_VERSION" ./cmd/promtool remove_all_sd
    go_tool prometheus github.com/prometheus/prometheus "$PROMETHEUS_VERSION" ./cmd/prometheus remove_all_sd
    ;;&
  all|node)
    if [ ! -x "$BIN/runc-$RUNC_VERSION/runc" ] && ! pkg-config --exists libseccomp 2>/dev/null; then
      echo "tools: installing libseccomp-dev for runc" >&2
      apt-get install -y -qq libseccomp-dev pkg-config >&2
    fi
    CGO=1 go_tool runc github.com/opencontainers/runc "$RUNC_VERSION" . "seccomp urfave_cli_no_docs"
    ;;&
  all|image)
    go_tool crane github.com/google/go-containerregistry "$CRANE_VERSION" ./cmd/crane
    ;;
esac
