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

# go_tool NAME MODULE_PACKAGE VERSION: `go install` into a per-version folder, then link the name.
go_tool() {
  local name=$1 pkg=$2 version=$3
  local dir="$BIN/$name-$version"
  if [ ! -x "$dir/$name" ]; then
    echo "tools: building $name $version (first time on this machine)" >&2
    mkdir -p "$dir.tmp"
    GOBIN="$dir.tmp" GOFLAGS=-buildvcs=false CGO_ENABLED=0 go install -trimpath -ldflags="-s -w" "$pkg@$version"
    local built
    built=$(ls "$dir.tmp" | head -n1)
    mv "$dir.tmp/$built" "$dir.tmp/$name"
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
    go_tool versitygw github.com/versity/versitygw/cmd/versitygw "$VERSITYGW_VERSION"
    python_venv
    ;;&
  all|peers)
    go_tool s5cmd github.com/peak/s5cmd/v2 "$S5CMD_VERSION"
    go_tool rclone github.com/rclone/rclone "$RCLONE_VERSION"
    go_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION"
    ;;
esac
