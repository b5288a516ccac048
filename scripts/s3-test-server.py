"""An S3-compatible server on 127.0.0.1 for the tests: moto's, with credentials enforced.

Starts the server on a free port, creates an IAM user with full access and a key pair,
creates a bucket and uploads a local directory into it, then turns authentication on:
from then on every request must be signed with that key pair. Prints one JSON line
({"endpoint", "access_key_id", "secret_access_key", "bucket", "region"}) and serves
until its standard input closes (the test that started it ended or died).

    .venv/bin/python scripts/s3-test-server.py --bucket NAME --upload DIR [--prefix P]
"""

import argparse
import json
import os
import socket
import sys

import boto3
from moto import settings
from moto.core.responses import ActionAuthenticatorMixin
from moto.moto_server.threaded_moto_server import ThreadedMotoServer

REGION = "us-east-1"
ADMIN_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
    }
)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--upload", help="local directory to copy into the bucket")
    parser.add_argument("--prefix", default="", help="key prefix for the uploaded files")
    args = parser.parse_args()

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    setup = dict(
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="setup",
        aws_secret_access_key="setup",
    )

    iam = boto3.client("iam", **setup)
    iam.create_user(UserName="quiver-test")
    iam.put_user_policy(
        UserName="quiver-test", PolicyName="all", PolicyDocument=ADMIN_POLICY
    )
    key = iam.create_access_key(UserName="quiver-test")["AccessKey"]

    s3 = boto3.client("s3", **setup)
    s3.create_bucket(Bucket=args.bucket)
    if args.upload:
        for root, _, files in os.walk(args.upload):
            for name in sorted(files):
                path = os.path.join(root, name)
                relative = os.path.relpath(path, args.upload).replace(os.sep, "/")
                s3.upload_file(path, args.bucket, args.prefix + relative)

    # From here on, every request must be signed by the test user's key (the server
    # runs in this process: its settings are ours to change).
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0

    print(
        json.dumps(
            {
                "endpoint": endpoint,
                "access_key_id": key["AccessKeyId"],
                "secret_access_key": key["SecretAccessKey"],
                "bucket": args.bucket,
                "region": REGION,
            }
        ),
        flush=True,
    )
    sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    main()
