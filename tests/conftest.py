"""Shared fixtures. One Ray session for the whole test run (Ray is slow to start on 2 cores);
tests never call `ray stop`, which would kill every Ray process of the user."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def ray_session():
    import ray

    from trainer.raysession import init_ray

    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


# ---------------------------------------------------------------- a real S3 server on 127.0.0.1
class S3Server:
    """moto in server mode, with IAM authentication on: requests need the keys of `env` (an IAM
    user created at start with every permission), so wrong credentials are refused as by S3."""

    def __init__(self, endpoint: str, env: dict[str, str], log_path):
        self.endpoint, self.env, self.log_path = endpoint, env, log_path


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """`python -m moto.server` on a free port in its own session, stopped by its PID at the end.
    moto checks signatures only once INITIAL_NO_AUTH_ACTION_COUNT requests have been served; it
    starts at infinity (no checks), the IAM user is created, then /moto-api/reset-auth sets it to 0."""
    import json
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("moto.server")
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    server_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                                stderr=subprocess.STDOUT, env=server_env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start on {endpoint}: {log_path.read_text()[-2000:]}") from None
                time.sleep(0.2)
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        iam.create_user(UserName="snrlab-tests")
        iam.put_user_policy(UserName="snrlab-tests", PolicyName="everything", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="snrlab-tests")["AccessKey"]
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST",
                                                      headers={"Content-Type": "text/plain"}), timeout=5).close()
        env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
               "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"], "AWS_REGION": "us-east-1",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
        yield S3Server(endpoint, env, log_path)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture
def s3_bucket(s3_server, monkeypatch):
    """A fresh bucket on the moto server, the server's AWS_* variables set for this test only (and
    any other S3 configuration of the machine unset); yields "s3://<bucket>/prefix"."""
    import secrets

    import pyarrow.fs as pafs

    for var in ("AWS_ENDPOINT_URL_S3", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    bucket = f"snrlab-{secrets.token_hex(6)}"
    pafs.S3FileSystem(endpoint_override=s3_server.endpoint, region="us-east-1", allow_bucket_creation=True,
                      access_key=s3_server.env["AWS_ACCESS_KEY_ID"],
                      secret_key=s3_server.env["AWS_SECRET_ACCESS_KEY"]).create_dir(bucket)
    yield f"s3://{bucket}/prefix"
