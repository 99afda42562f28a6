"""Peer: upload files with boto3's CRT transfer client (s3transfer.crt over awscrt).

usage: crt_upload.py --endpoint URL --bucket B [--part-size BYTES] [--concurrency N]
                     [--checksum ALGO] SRC=KEY [SRC=KEY ...]
Without --part-size/--concurrency the CRT picks its own (its defaults); without --checksum
the CRT transfer manager sends its default CRC32 trailer checksum. --concurrency caps the
connections of the whole client (all files together), as Outbound's parts in flight are; the
transfer config's max_concurrency alone caps each file, not the total.
Keys come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
"""
import argparse
import sys

import os

import awscrt.auth
import awscrt.io
import awscrt.s3
import botocore.session
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from s3transfer.crt import BotocoreCRTRequestSerializer, CRTTransferManager, create_s3_crt_client


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--bucket", required=True)
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--part-size", type=int)
    p.add_argument("--concurrency", type=int)
    p.add_argument("--checksum")
    p.add_argument("files", nargs="+")
    a = p.parse_args()
    # boto3's create_transfer_manager() builds its CRT client for AWS endpoints only (it drops
    # endpoint_url), so build the same pieces as it does, with our endpoint (as the AWS CLI does).
    creds = awscrt.auth.AwsCredentialsProvider.new_static(
        os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
    if a.concurrency:
        # create_s3_crt_client() has no connection cap: build the same client with one.
        elg = awscrt.io.EventLoopGroup()
        bootstrap = awscrt.io.ClientBootstrap(elg, awscrt.io.DefaultHostResolver(elg))
        crt = awscrt.s3.S3Client(
            bootstrap=bootstrap, region=a.region, credential_provider=creds,
            part_size=a.part_size or 8 * 1024 * 1024,
            tls_mode=(awscrt.s3.S3RequestTlsMode.ENABLED if a.endpoint.startswith("https")
                      else awscrt.s3.S3RequestTlsMode.DISABLED),
            throughput_target_gbps=10.0, max_active_connections_override=a.concurrency)
    else:
        crt = create_s3_crt_client(a.region, crt_credentials_provider=creds,
                                   part_size=a.part_size or 8 * 1024 * 1024,
                                   use_ssl=a.endpoint.startswith("https"))
    serializer = BotocoreCRTRequestSerializer(botocore.session.Session(), {
        "region_name": a.region, "endpoint_url": a.endpoint,
        "config": Config(s3={"addressing_style": "path"})})
    kw = {}
    if a.part_size:
        kw["multipart_chunksize"] = a.part_size
    if a.concurrency:
        kw["max_concurrency"] = a.concurrency
    tm = CRTTransferManager(crt, serializer, config=TransferConfig(**kw))
    extra = {"ChecksumAlgorithm": a.checksum} if a.checksum else {}
    with tm:
        futs = []
        for f in a.files:
            src, key = f.split("=", 1)
            futs.append(tm.upload(src, a.bucket, key, extra_args=dict(extra)))  # mutated by s3transfer
        for fu in futs:
            fu.result()


if __name__ == "__main__":
    main()
