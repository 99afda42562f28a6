#!/usr/bin/env python3
"""How long versitygw takes to complete multipart uploads: N objects of SIZE MiB, parts sent from
memory by boto3 (8 at a time), then every completion at once. Usage: completion.py N SIZE_MIB [PART_MIB, default 16].
Shows why one object cannot reach the many-object ceiling (bench/analysis.md)."""
import concurrent.futures as cf
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import boto3  # noqa: E402
import bench  # noqa: E402
from botocore.config import Config  # noqa: E402

MiB = 1 << 20
nobj, size = int(sys.argv[1]), int(sys.argv[2]) * MiB
part = int(sys.argv[3] if len(sys.argv) > 3 else 16) * MiB
os.makedirs(bench.DATA, exist_ok=True)
server = bench.Server()
try:
    s3 = boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=bench.KEY,
                      aws_secret_access_key=bench.SECRET, region_name="us-east-1",
                      config=Config(max_pool_connections=16, request_checksum_calculation="when_required"))
    buf = os.urandom(part)
    ids = [s3.create_multipart_upload(Bucket=bench.BUCKET, Key=f"o{i}")["UploadId"] for i in range(nobj)]
    nparts = size // part
    etags = [[None] * nparts for _ in range(nobj)]
    def put(o, p):
        r = s3.upload_part(Bucket=bench.BUCKET, Key=f"o{o}", UploadId=ids[o], PartNumber=p + 1, Body=buf)
        etags[o][p] = r["ETag"]
    t0 = time.time()
    with cf.ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda a: put(*a), [(o, p) for o in range(nobj) for p in range(nparts)]))
    t1 = time.time()
    def complete(o):
        s = time.time()
        s3.complete_multipart_upload(Bucket=bench.BUCKET, Key=f"o{o}", UploadId=ids[o],
            MultipartUpload={"Parts": [{"ETag": e, "PartNumber": i + 1} for i, e in enumerate(etags[o])]})
        return time.time() - s
    with cf.ThreadPoolExecutor(nobj) as ex:
        times = list(ex.map(complete, range(nobj)))
    t2 = time.time()
    total = nobj * size
    print(f"{nobj} x {size // MiB} MiB: parts {t1 - t0:.1f} s ({total / (t1 - t0) / 1e6:.0f} MB/s), "
          f"completions {t2 - t1:.1f} s (each {', '.join(f'{t:.1f}' for t in times)}), overall {total / (t2 - t0) / 1e6:.0f} MB/s")
finally:
    server.stop()
