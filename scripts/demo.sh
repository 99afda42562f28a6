#!/usr/bin/env bash
# `make demo`: a real delivery end to end on the local ground. Starts the ground, installs Outbound
# with its Helm chart (the operator runs as a pod under the chart's RBAC), makes sample data on a
# PVC, applies a destination and a delivery, shows progress, then checks the bucket holds exactly
# what the plan says, byte for byte. Leaves the ground running.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
started=$(date +%s)

say "building Outbound and starting the local ground"
cargo build --bins
tests/ground/scripts/up.sh
# shellcheck disable=SC1091
source tests/ground/.state/env
export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY AWS_DEFAULT_REGION=$S3_REGION
s3() { aws --endpoint-url "$S3_ENDPOINT" "$@"; }

ns=demo
bucket=demo-acme-inbound
data=$GROUND_STATE/demo-data
split=16Mi

say "installing the operator with Helm (namespace outbound-system), its image from the ground's registry"
# CRDs applied by hand earlier (by a test, say) are adopted by the release instead of refused.
for obj in crd/outbounddestinations.outbound.dev crd/outbounddeliveries.outbound.dev \
  crd/outboundtenancies.outbound.dev crd/outboundshards.outbound.dev crd/outboundschedules.outbound.dev \
  validatingadmissionpolicy/outbounddeliveries.outbound.dev-split-size \
  validatingadmissionpolicybinding/outbounddeliveries.outbound.dev-split-size-binding \
  validatingadmissionpolicy/outbounddeliveries.outbound.dev-upload-pods \
  validatingadmissionpolicybinding/outbounddeliveries.outbound.dev-upload-pods-binding \
  validatingadmissionpolicy/outbounddestinations.outbound.dev-tenancy \
  validatingadmissionpolicybinding/outbounddestinations.outbound.dev-tenancy-binding; do
  if kubectl get "$obj" >/dev/null 2>&1; then
    kubectl label "$obj" app.kubernetes.io/managed-by=Helm --overwrite >/dev/null
    kubectl annotate "$obj" meta.helm.sh/release-name=outbound meta.helm.sh/release-namespace=outbound-system --overwrite >/dev/null
  fi
done
# The watched namespace first: the chart puts the operator's Role there.
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
# The operator's image from the ground's registry, by digest, with the chart's two replicas.
helm upgrade --install outbound charts/outbound --namespace outbound-system --create-namespace \
  --set image.repository="$GROUND_IMAGE_REPOSITORY" --set image.digest="$GROUND_IMAGE_DIGEST" \
  --set logFormat=text --set watchNamespace=demo --wait --timeout 120s \
  --set endpoints.allowHttp=true --set endpoints.allowPrivate=true  # the ground's S3 is http on 127.0.0.1
kubectl -n outbound-system get pods -o wide

say "sample data: one file larger than the $split split size and a few small ones"
rm -rf "$data" && mkdir -p "$data/2026-11-27"
python3 - "$data/2026-11-27" <<'PY'
import os, random, sys
out = sys.argv[1]
rnd = random.Random(7)
def lines(path, n):
    with open(path, "w") as f:
        for i in range(n):
            f.write("%032x\t%d\t%s\n" % (rnd.getrandbits(128), i, ",".join(str(rnd.randrange(1 << 20)) for _ in range(rnd.randrange(1, 12)))))
lines(os.path.join(out, "segments.sync"), 700_000)        # about 45 MiB: three objects
for name in ("small-a.sync", "small-b.sync", "small-c.sync"):
    lines(os.path.join(out, name), 2_000)
PY
ls -l "$data/2026-11-27"
kubectl apply -f - <<YAML
apiVersion: v1
kind: PersistentVolume
metadata: {name: demo-exports}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteMany]
  persistentVolumeReclaimPolicy: Retain
  hostPath: {path: $data}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: exports, namespace: $ns}
spec:
  accessModes: [ReadWriteMany]
  storageClassName: ""
  volumeName: demo-exports
  resources: {requests: {storage: 1Gi}}
YAML

say "the customer's bucket and keys (versitygw on $S3_ENDPOINT)"
s3 s3 rb "s3://$bucket" --force >/dev/null 2>&1 || true
s3 s3 mb "s3://$bucket"
kubectl -n "$ns" create secret generic acme-keys --from-literal=AWS_ACCESS_KEY_ID="$S3_ACCESS_KEY" \
  --from-literal=AWS_SECRET_ACCESS_KEY="$S3_SECRET_KEY" --dry-run=client -o yaml | kubectl apply -f - >/dev/null

say "applying the destination and waiting for its probe"
kubectl apply -f - <<YAML
apiVersion: outbound.dev/v1alpha1
kind: OutboundDestination
metadata: {name: acme, namespace: $ns}
spec:
  s3: {bucket: $bucket, region: $S3_REGION, endpoint: "$S3_ENDPOINT", forcePathStyle: true, prefix: audience/}
  credentials:
    secret: {name: acme-keys}
  upload: {splitSize: $split, splitOn: lines}
YAML
kubectl -n "$ns" wait --for=condition=Ready odest/acme --timeout=90s
kubectl -n "$ns" get odest acme

say "applying the delivery"
kubectl -n "$ns" delete odel segments-2026-11-27 --ignore-not-found --wait=true >/dev/null
kubectl apply -f - <<YAML
apiVersion: outbound.dev/v1alpha1
kind: OutboundDelivery
metadata: {name: segments-2026-11-27, namespace: $ns}
spec:
  destinationRef: {name: acme}
  source:
    volume: {claimName: exports, path: 2026-11-27/, include: ["*.sync"]}
  keyPrefix: 2026-11-27/
  manifest: true
YAML
phase=""
for _ in $(seq 1 300); do
  phase=$(kubectl -n "$ns" get odel segments-2026-11-27 -o jsonpath='{.status.phase}')
  progress=$(kubectl -n "$ns" get odel segments-2026-11-27 -o jsonpath='{.status.progress.bytesDone}/{.status.progress.bytesTotal} bytes, {.status.progress.objectsDone}/{.status.progress.objectsTotal} objects')
  echo "  phase=${phase:-Pending}  $progress"
  case "$phase" in Succeeded|Failed) break ;; esac
  sleep 1
done
kubectl -n "$ns" get odest,odel
if [ "$phase" != Succeeded ]; then
  kubectl -n "$ns" get odel segments-2026-11-27 -o yaml
  echo "demo: the delivery did not succeed (phase ${phase:-none}); logs: $GROUND_STATE/logs/pods/" >&2
  exit 1
fi

say "the bucket"
s3 s3 ls --recursive "s3://$bucket/"
manifest_key=$(kubectl -n "$ns" get odel segments-2026-11-27 -o jsonpath='{.status.manifestKey}')
echo "manifest ($manifest_key):"
# Through a file: `head` on a pipe would end the pipeline early (SIGPIPE under pipefail).
s3 s3 cp --quiet "s3://$bucket/$manifest_key" "$GROUND_STATE/demo-manifest.json"
python3 -m json.tool "$GROUND_STATE/demo-manifest.json" > "$GROUND_STATE/demo-manifest.pretty.json"
head -n 40 "$GROUND_STATE/demo-manifest.pretty.json"

say "checking the bucket holds exactly what it should"
"${CARGO_TARGET_DIR:-target}/debug/outbound" plan --source "$data/2026-11-27" --include '*.sync' --prefix audience/2026-11-27/ \
  --split-size "$split" --output json > "$GROUND_STATE/demo-plan.json"
check=$(mktemp -d)
s3 s3 sync --quiet "s3://$bucket/audience/" "$check/"
python3 - "$GROUND_STATE/demo-plan.json" "$check" "$data/2026-11-27" "$manifest_key" <<'PY'
import hashlib, json, os, sys
plan, got, src, manifest_key = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], sys.argv[4]
objects = plan["objects"] if isinstance(plan, dict) else plan
want = {o["key"].removeprefix("audience/"): o for o in objects}
have = {os.path.relpath(os.path.join(d, f), got) for d, _, fs in os.walk(got) for f in fs}
manifest = manifest_key.removeprefix("audience/")
assert manifest in have, f"manifest {manifest} missing"
have.discard(manifest)
assert have == set(want), f"bucket and plan differ: extra {sorted(have - set(want))}, missing {sorted(set(want) - have)}"
for key in have:
    assert os.path.getsize(os.path.join(got, key)) == want[key]["size"], key
# Every source file is the concatenation of its objects, byte for byte.
for name in sorted(os.listdir(src)):
    parts = sorted((k for k, o in want.items() if o["source"] == name), key=lambda k: want[k]["sequence"])
    joined = b"".join(open(os.path.join(got, k), "rb").read() for k in parts)
    assert hashlib.sha256(joined).digest() == hashlib.sha256(open(os.path.join(src, name), "rb").read()).digest(), name
print(f"ok: {len(have)} objects and the manifest, every source file reassembles byte-identically")
PY
rm -rf "$check"

say "done in $(( $(date +%s) - started ))s"
cat <<TXT
The ground is still running, so you can look around:
  source tests/ground/.state/env
  kubectl get odest,odel -A
  kubectl -n $ns get odel segments-2026-11-27 -o yaml
  aws --endpoint-url \$S3_ENDPOINT s3 ls --recursive s3://$bucket/   (keys: \$S3_ACCESS_KEY / \$S3_SECRET_KEY)
  ls $GROUND_STATE/logs/pods/      # the operator's and the upload pods' logs
Stop it with: make ground-down
TXT
