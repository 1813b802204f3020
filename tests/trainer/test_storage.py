"""trainer/storage.py against the local file system and a real S3 server (moto on 127.0.0.1,
tests/conftest.py's s3_server: IAM authentication on, so wrong credentials are refused)."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from trainer.storage import (
    Storage,
    StorageUnavailable,
    describe_error,
    forwarded_env,
    s3_options,
    storage_from_env,
)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> Storage:
    if request.param == "local":
        return Storage.from_uri(tmp_path / "data")
    return Storage.from_uri(request.getfixturevalue("s3_bucket"))


# ---------------------------------------------------------------- construction (no server)
def test_local_forms_are_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    a = Storage.from_uri(tmp_path / "d")
    b = Storage.from_uri(f"file://{tmp_path}/d")
    c = Storage.from_uri("~/d")
    assert a == b == c and a.is_local and a.uri == a.root == (tmp_path / "d").resolve().as_posix()
    assert a.path("runs", "r1/metrics.jsonl") == f"{a.root}/runs/r1/metrics.jsonl"
    assert a.ray_train_storage() == (f"{a.root}/runs", None)
    assert a.endpoint is None and a.bucket is None


def test_storage_from_env(tmp_path, monkeypatch):
    monkeypatch.delenv("SNRLAB_STORAGE", raising=False)
    monkeypatch.setenv("SNRLAB_DATA_DIR", str(tmp_path / "data"))
    assert storage_from_env().root == (tmp_path / "data").resolve().as_posix()
    monkeypatch.setenv("SNRLAB_STORAGE", "s3://bkt/some/prefix")
    s = storage_from_env()
    assert (s.scheme, s.root, s.uri, s.bucket, s.is_local) == ("s3", "bkt/some/prefix", "s3://bkt/some/prefix", "bkt", False)


def test_s3_options_come_from_the_environment_only():
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000/", "AWS_REGION": "eu-west-3",
           "AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "secret"}
    opts = s3_options(env)
    assert opts == {"allow_delayed_open": True, "endpoint_override": "127.0.0.1:9000", "scheme": "http", "region": "eu-west-3"}
    assert "secret" not in repr(opts) and "AKIA" not in repr(opts)  # credentials: the SDK's default chain
    assert s3_options({**env, "AWS_ENDPOINT_URL_S3": "https://s3.example.org"})["endpoint_override"] == "s3.example.org"
    assert s3_options({"AWS_ENDPOINT_URL": "minio:9000"})["scheme"] == "https"
    assert "endpoint_override" not in s3_options({**env, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"})
    assert s3_options({"AWS_DEFAULT_REGION": "us-west-2"}) == {"allow_delayed_open": True, "region": "us-west-2"}
    with pytest.raises(ValueError, match="not an http"):
        s3_options({"AWS_ENDPOINT_URL": "ftp://x"})
    assert forwarded_env({**env, "HOME": "/root", "AWS_SESSION_TOKEN": ""}) == env


def test_s3_uri_carries_no_configuration(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    s = Storage.from_uri("s3://bkt/pre/fix/")
    assert (s.root, s.uri, s.endpoint) == ("bkt/pre/fix", "s3://bkt/pre/fix", "http://127.0.0.1:1")
    assert s.ray_train_storage("runs") == ("bkt/pre/fix/runs", s.fs)
    # what Ray pickles to its controller and workers: the endpoint, never a key
    reduced = s.fs.__reduce__()[1][0]
    assert reduced["endpoint_override"] == "127.0.0.1:1" and reduced["secret_key"] is None and reduced["access_key"] is None
    for bad in ("s3://bkt/p?endpoint_override=x", "s3://key:secret@bkt/p", "s3:///p"):
        with pytest.raises(ValueError) as e:
            Storage.from_uri(bad)
        assert "secret" not in str(e.value)


def test_other_schemes_through_pyarrow_or_fsspec():
    gs = Storage.from_uri("gs://bkt/prefix")  # pyarrow's own GcsFileSystem; nothing is contacted yet
    assert type(gs.fs).__name__ == "GcsFileSystem" and gs.uri == "gs://bkt/prefix"
    mem = Storage.from_uri("memory://snrlab-test/root")  # pyarrow does not know memory://: fsspec
    assert isinstance(mem.fs, pafs.PyFileSystem) and mem.uri == "memory://snrlab-test/root"
    mem.write_json("runs/a/config.json", {"x": 1})
    assert mem.read_json("runs/a/config.json") == {"x": 1} and mem.list("runs") == ["a"]
    assert mem.walk_files() == ["runs/a/config.json"]
    mem.delete_dir("runs")
    assert not mem.exists("runs/a/config.json")


def test_paths_stay_below_the_root(tmp_path):
    s = Storage.from_uri(tmp_path)
    for bad in ("../x", "runs/../../x", "./x"):
        with pytest.raises(ValueError):
            s.path(bad)
    assert s.path("/runs//a/") == f"{s.root}/runs/a"
    with pytest.raises(ValueError):
        s.delete_dir("")


# ---------------------------------------------------------------- every method, both stores
def test_files_round_trip(store):
    assert not store.exists("runs/r1/config.json") and store.list("runs") == [] and store.walk_files("runs") == []
    store.write_json("runs/r1/config.json", {"steps": 3, "name": "r1"})
    store.write_bytes("runs/r1/eval/features.npy", b"\x00" * 1000)
    store.write_bytes("runs/r2/train_done", b"")
    assert store.read_json("runs/r1/config.json") == {"steps": 3, "name": "r1"}
    assert store.read_bytes("runs/r1/eval/features.npy") == b"\x00" * 1000
    assert store.exists("runs/r1/config.json") and store.exists("runs/r1")
    assert store.size("runs/r1/eval/features.npy") == 1000 and store.size("runs/r2/train_done") == 0
    assert store.list("runs") == ["r1", "r2"] and store.list("runs/r1") == ["config.json", "eval"]
    assert store.walk_files("runs") == ["r1/config.json", "r1/eval/features.npy", "r2/train_done"]
    with store.open_input_stream("runs/r1/eval/features.npy") as f:
        assert f.read(10) == b"\x00" * 10 and len(f.read()) == 990
    store.write_bytes("runs/r1/config.json", b"{}")  # overwrite
    assert store.read_json("runs/r1/config.json") == {}
    with pytest.raises(FileNotFoundError):
        store.read_bytes("runs/nope")
    with pytest.raises(FileNotFoundError):
        store.size("runs/nope")
    store.delete_dir("runs/r1")
    store.delete_dir("runs/never-was")
    assert store.walk_files("runs") == ["r2/train_done"] and not store.exists("runs/r1/config.json")


def test_upload_download_round_trip(store, tmp_path):
    src = tmp_path / "src"
    (src / "unet_ema").mkdir(parents=True)
    (src / "unet_ema" / "weights.bin").write_bytes(os.urandom(300_000))
    (src / "config.json").write_text('{"step": 5}')
    assert store.upload_dir(src, "runs/r1/snapshots/step_5") == ["config.json", "unet_ema/weights.bin"]
    assert store.walk_files("runs/r1/snapshots") == ["step_5/config.json", "step_5/unet_ema/weights.bin"]
    dest = tmp_path / "dest"
    assert store.download_dir("runs/r1/snapshots/step_5", dest) == ["config.json", "unet_ema/weights.bin"]
    assert (dest / "unet_ema" / "weights.bin").read_bytes() == (src / "unet_ema" / "weights.bin").read_bytes()
    assert (dest / "config.json").read_text() == '{"step": 5}'
    # a second download fetches only what differs in size
    (dest / "config.json").write_text("{}")
    assert store.download_dir("runs/r1/snapshots/step_5", dest) == ["config.json"]
    assert (dest / "config.json").read_text() == '{"step": 5}'
    assert not [p for p in dest.rglob("*") if p.name.startswith(".tmp-")]


def test_a_reader_sees_the_old_or_the_new_object_never_part(store):
    """Every version a distinct size and byte: a torn read (a prefix of another version, one
    padded out to an old size, or a mix) cannot pass for any of them. Writes go on until the
    reader has read 30 times."""
    versions = [bytes([65 + i]) * (2_000_000 + 50_000 * (i % 2) - 1000 * i) for i in range(9)]
    store.write_bytes("runs/r/results.json", versions[0])
    seen, errors, stop = [], [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                seen.append(store.read_bytes("runs/r/results.json"))
            except OSError as e:  # "kept changing": a reader starved by writes is not a torn read, but say so
                errors.append(e)

    t = threading.Thread(target=reader)
    t.start()
    try:
        deadline, i = time.monotonic() + 30, 0
        while (len(seen) < 30 or i < len(versions)) and time.monotonic() < deadline:
            i += 1  # round and round: a version comes back only after 8 other writes
            store.write_bytes("runs/r/results.json", versions[i % len(versions)])
            time.sleep(0.1)  # room for reads to finish: a writer flat out (a PUT every 30 ms) starves the retries
    finally:
        stop.set()
        t.join()
    torn = [(len(s), s[:1], s[-1:]) for s in seen if s not in versions]
    assert len(seen) >= 30 and not torn and not errors, errors
    assert store.walk_files("runs/r") == ["results.json"] and store.list("runs/r") == ["results.json"]


def test_local_write_replaces_the_file(tmp_path):
    """A new inode through os.replace: a reader that opened the old file reads it whole; no
    temporary file stays behind; permissions are a plain open()'s."""
    s = Storage.from_uri(tmp_path)
    s.write_bytes("runs/r/train_done", b"old content")
    target = tmp_path / "runs" / "r" / "train_done"
    before = target.stat().st_ino
    with open(target, "rb") as held:
        s.write_bytes("runs/r/train_done", b"new")
        assert held.read() == b"old content"
    assert target.stat().st_ino != before and target.read_bytes() == b"new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["train_done"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_s3_object_appears_only_when_its_upload_completes(s3_bucket, s3_server):
    s = Storage.from_uri(s3_bucket)
    s.write_bytes("runs/r/results.json", b"old")
    s.write_bytes("runs/r/big.bin", b"x" * (11 << 20))  # above the 10 MiB part size
    key = f"/{s.path('runs/r')}/"
    requests = [line.split('"')[1] for line in s3_server.log_path.read_text().splitlines() if key in line]
    assert f"PUT {key}results.json HTTP/1.1" in requests  # one PutObject, no multipart upload
    assert not [r for r in requests if "results.json?" in r]
    assert any(r.startswith(f"POST {key}big.bin?uploads") for r in requests)  # multipart: published on completion
    with s.fs.open_output_stream(s.path("runs/r/results.json")) as f:  # what write_bytes does
        f.write(b"new" * 1000)
        assert s.read_bytes("runs/r/results.json") == b"old"
        with s.fs.open_output_stream(s.path("runs/r/fresh.bin")) as g:
            g.write(b"y" * (11 << 20))  # a multipart upload under way: parts sent, no object yet
            assert not s.exists("runs/r/fresh.bin") and s.list("runs/r") == ["big.bin", "results.json"]
    assert s.read_bytes("runs/r/results.json") == b"new" * 1000 and s.size("runs/r/fresh.bin") == 11 << 20


# ---------------------------------------------------------------- the start-up probe
def test_check_passes_and_leaves_nothing(store):
    store.check()
    assert store.walk_files() == [] and store.list() == []


def test_describe_error_classifies_the_sdk_texts():
    def kind(text):
        return describe_error(text, uri="s3://b/p", endpoint="http://h:1", bucket="b")

    k, m = kind("When uploading object with key 'p/x' in bucket 'b': AWS Error NETWORK_CONNECTION during PutObject "
                "operation: curlCode: 7, Couldn't connect to server; Details: Failed to connect to h port 1: Connection refused")
    assert k == "unreachable" and "http://h:1 unreachable (Failed to connect to h port 1: Connection refused)" in m
    k, m = kind("AWS Error NO_SUCH_BUCKET during PutObject operation: The specified bucket does not exist (Request ID: X)")
    assert k == "no_bucket" and "bucket 'b' does not exist at http://h:1" in m
    k, m = kind("AWS Error SIGNATURE_DOES_NOT_MATCH during PutObject operation: The request signature we calculated "
                "does not match (Request ID: X)")
    assert k == "credentials" and "SIGNATURE_DOES_NOT_MATCH: The request signature" in m and "Request ID" not in m
    assert "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN" in m
    assert kind("AWS Error ACCESS_DENIED during HeadObject operation: No response body.")[0] == "credentials"
    assert kind("AWS Error SLOW_DOWN during PutObject operation: Reduce your request rate.\nmore") == (
        "other", "s3://b/p: AWS Error SLOW_DOWN during PutObject operation: Reduce your request rate.")


def _check_fails(uri: str) -> tuple[StorageUnavailable, float]:
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as e:
        Storage.from_uri(uri).check(timeout=3)
    return e.value, time.monotonic() - started


def test_check_unreachable_endpoint(s3_bucket, monkeypatch):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    err, took = _check_fails(s3_bucket)
    assert err.kind == "unreachable" and f"endpoint http://127.0.0.1:{port} unreachable" in str(err), err
    assert "Traceback" not in str(err) and "\n" not in str(err) and took < 10


def test_check_missing_bucket(s3_bucket, s3_server):
    err, _ = _check_fails("s3://snrlab-never-created/prefix")
    assert err.kind == "no_bucket", err
    assert f"bucket 'snrlab-never-created' does not exist at {s3_server.endpoint}" in str(err)
    buckets = [i.base_name for i in pafs.S3FileSystem(**s3_options(os.environ)).get_file_info(pafs.FileSelector(""))]
    assert s3_bucket.split("/")[2] in buckets and "snrlab-never-created" not in buckets  # the probe created none


@pytest.mark.parametrize("var, value", [("AWS_SECRET_ACCESS_KEY", "wrong"), ("AWS_ACCESS_KEY_ID", "AKIANOSUCHKEY0000000")])
def test_check_wrong_credentials(s3_bucket, monkeypatch, var, value):
    with monkeypatch.context() as m:
        m.setenv(var, value)
        err, _ = _check_fails(s3_bucket)
    assert err.kind == "credentials" and "access denied" in str(err) and "check AWS_ACCESS_KEY_ID" in str(err), err
    assert Storage.from_uri(s3_bucket).walk_files() == []  # nothing half-written (read with the right keys)


# ---------------------------------------------------------------- Ray Train on the bucket
def test_ray_train_checkpoints_and_resumes_on_the_bucket(ray_session, s3_bucket):
    """Two fits of one run name on the bucket: the second resumes from the first's checkpoint.
    The Train controller (it writes the run's state to the store) and workers are Ray actors
    started by the cluster's raylet, which never saw this test's AWS_* variables (the cluster
    may be older than the server): they get them the way snrlab's run actor would, from a
    runtime_env on the task that calls fit(), which the controller and workers inherit."""
    import ray

    s = Storage.from_uri(s3_bucket)
    storage_path, storage_filesystem = s.ray_train_storage()
    assert storage_filesystem is s.fs

    def report_once(config: dict) -> None:  # defined here: pickled by value, whatever this module is called
        import tempfile

        import ray.train

        checkpoint, seen = ray.train.get_checkpoint(), ""
        if checkpoint:
            with checkpoint.as_directory() as d:
                seen = Path(d, "state.txt").read_text()
        with tempfile.TemporaryDirectory() as d:
            Path(d, "state.txt").write_text(config["payload"])
            ray.train.report({"seen": seen}, checkpoint=ray.train.Checkpoint.from_directory(d))

    @ray.remote(num_cpus=0)
    def fit(payload: str) -> tuple[str, str]:
        import ray.train
        from ray.train.torch import TorchTrainer

        result = TorchTrainer(
            report_once,
            train_loop_config={"payload": payload},
            scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
            run_config=ray.train.RunConfig(name="r1", storage_path=storage_path, storage_filesystem=storage_filesystem),
        ).fit()
        return result.metrics["seen"], result.checkpoint.path

    with_env = fit.options(runtime_env={"env_vars": forwarded_env()})
    seen, path = ray.get(with_env.remote("first"), timeout=300)
    assert seen == "" and path.startswith(f"{s.root}/runs/r1/checkpoint_")
    seen, path2 = ray.get(with_env.remote("second"), timeout=300)
    assert seen == "first" and path2 != path
    files = s.walk_files("runs/r1")
    assert sum(f.startswith("checkpoint_") and f.endswith("/state.txt") for f in files) == 2, files
    assert s.read_bytes(f"{path2.removeprefix(s.root + '/')}/state.txt") == b"second"
    assert not os.path.exists(storage_path)  # nothing went to a local directory of that name
