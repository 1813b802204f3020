"""Where runs live: one `Storage` value, a pyarrow file system plus a root path inside it.

`SNRLAB_STORAGE` names it: a plain path or `file://` is the local data dir (today's behaviour;
on several nodes it has to be a shared POSIX mount), `s3://bucket/prefix` an S3 bucket, and any
other URI pyarrow knows (`gs://`, `abfs://`, `hdfs://`) or fsspec knows (`memory://`, ...) that
store. Ray Train's checkpoints go through its own storage support (`ray_train_storage` gives the
`storage_path` / `storage_filesystem` pair for `RunConfig`); snrlab's own files go through the
methods here, on the same file system object.

Endpoint, region and credentials come from the store's standard environment variables, never
from the URI, a spec or the database: for S3, AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL (pyarrow 26
ignores both, so `s3_options` reads them into `endpoint_override`; http:// endpoints work),
AWS_REGION / AWS_DEFAULT_REGION, and the AWS SDK's own default chain for credentials
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, else a profile, web identity or
the instance role). Credentials are never put into the file system object, so when Ray pickles
it to the Train controller and workers they resolve their own: every process that touches the
store needs the variables (a node's environment, or `forwarded_env()` in a runtime_env).

Writes are whole objects: a local file is written under a temporary name in the same directory
and `os.replace`d into place; an object store gets one upload that becomes visible only when it
completes (a single PutObject below pyarrow's 10 MiB part size, else a multipart upload, which
S3 also publishes atomically on completion). A reader sees the old object or the new one, never
part of one. There are no appends and no renames: object stores have neither, so a log that
grows (metrics.jsonl) has to be rewritten whole or split into objects by its writer.
"""
from __future__ import annotations

import json
import os
import posixpath
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pyarrow.fs as pafs

TMP_PREFIX = ".tmp-"  # in-flight local writes; never listed
PROBE_PREFIX = ".snrlab-probe-"
CHUNK = 8 << 20
READ_ATTEMPTS = 5
CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
# What a process needs to reach an S3 store the way this one does (see forwarded_env).
S3_ENV_VARS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_REGION",
               "AWS_DEFAULT_REGION", *CREDENTIAL_VARS, "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
               "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CA_BUNDLE")


class StorageUnavailable(ConnectionError):
    """The store cannot be written: `kind` is "unreachable", "no_bucket", "credentials" or "other",
    and the message says which endpoint, bucket or variables to look at (one line, no traceback)."""

    def __init__(self, message: str, kind: str = "other"):
        super().__init__(message)
        self.kind = kind


# ---------------------------------------------------------------- S3 from the environment
def s3_endpoint(environ: Mapping[str, str]) -> str | None:
    """The endpoint URL the AWS tools would use: AWS_ENDPOINT_URL_S3 wins over AWS_ENDPOINT_URL,
    AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true ignores both (the AWS SDKs' rules). None: AWS itself."""
    if environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").strip().lower() == "true":
        return None
    url = (environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL") or "").strip()
    return url or None


def s3_options(environ: Mapping[str, str]) -> dict:
    """S3FileSystem keyword arguments from the environment, credentials left out. pyarrow 26 reads
    neither AWS_ENDPOINT_URL nor AWS_ENDPOINT_URL_S3 (it would go to s3.<region>.amazonaws.com), so
    the endpoint becomes `endpoint_override` plus `scheme` (a local MinIO or moto is plain http).
    `allow_delayed_open` makes a small object one PutObject at close instead of a multipart upload."""
    opts: dict = {"allow_delayed_open": True}
    endpoint = s3_endpoint(environ)
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"S3 endpoint {endpoint!r} (from AWS_ENDPOINT_URL) is not an http(s) URL")
        opts["endpoint_override"] = parts.netloc + parts.path.rstrip("/")
        opts["scheme"] = parts.scheme
    region = (environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "").strip()
    if region:
        opts["region"] = region
    return opts


def forwarded_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The S3 variables set here, for a Ray runtime_env (`{"env_vars": forwarded_env()}`) when the
    cluster's nodes were started without them. They include secrets: a node with its own
    credentials (an instance role, a node environment) needs none of this."""
    environ = os.environ if environ is None else environ
    return {k: environ[k] for k in S3_ENV_VARS if environ.get(k)}


# ---------------------------------------------------------------- errors, as the probe reports them
_UNREACHABLE = ("NETWORK_CONNECTION", "curlCode", "Could not connect", "Could not resolve", "Connection refused",
                "timed out", "Timeout was reached", "Couldn't connect", "Failed to connect")
_NO_BUCKET = ("NO_SUCH_BUCKET", "NoSuchBucket", "bucket does not exist")
_CREDENTIALS = ("ACCESS_DENIED", "AccessDenied", "INVALID_ACCESS_KEY_ID", "InvalidAccessKeyId", "SIGNATURE_DOES_NOT_MATCH",
                "SignatureDoesNotMatch", "EXPIRED_TOKEN", "ExpiredToken", "InvalidToken", "MISSING_AUTHENTICATION_TOKEN",
                "No response body", "HTTP status 403", "Forbidden", "credentials")


def describe_error(text: str, *, uri: str, endpoint: str | None = None, bucket: str | None = None) -> tuple[str, str]:
    """(kind, one-line message) for the text of a failed probe. Classified on the AWS SDK's error
    names as pyarrow prints them ("AWS Error NETWORK_CONNECTION during PutObject operation: ...");
    the store's own first line otherwise. A 403 HeadObject has no body, hence "No response body"."""
    line = " ".join(str(text).split())
    first = str(text).strip().splitlines()[0].strip() if str(text).strip() else type(text).__name__
    where = endpoint or "the store's default endpoint"
    if any(m in line for m in _NO_BUCKET):
        return "no_bucket", f"{uri}: bucket {bucket!r} does not exist at {where} (snrlab never creates buckets; create it)"
    if any(m in line for m in _UNREACHABLE):
        detail = line.split("Details:")[-1].strip() if "Details:" in line else first
        return "unreachable", f"{uri}: endpoint {where} unreachable ({detail}); check AWS_ENDPOINT_URL"
    if any(m in line for m in _CREDENTIALS):
        return "credentials", (f"{uri}: access denied at {where} ({_aws_reason(line)}); check "
                               f"{', '.join(CREDENTIAL_VARS)} (or the profile / role they come from)")
    return "other", f"{uri}: {first}"


def _aws_reason(line: str) -> str:
    """'AWS Error INVALID_ACCESS_KEY_ID during PutObject operation: The AWS Access Key Id ...' ->
    'INVALID_ACCESS_KEY_ID: The AWS Access Key Id ...', without the request id."""
    if "AWS Error " in line:
        rest = line.split("AWS Error ", 1)[1]
        name, _, tail = rest.partition(" during ")
        message = tail.split(": ", 1)[1] if ": " in tail else tail
        return f"{name}: {message.split(' (Request ID')[0].strip()}"
    return line.split(" (Request ID")[0]


# ---------------------------------------------------------------- the value
@dataclass(frozen=True)
class Storage:
    """`fs` and `root` (a path inside it: '/abs/dir' locally, 'bucket/prefix' on S3); every
    method takes paths relative to the root, '/'-joined."""

    fs: pafs.FileSystem
    root: str
    scheme: str = "file"
    s3: Mapping | None = field(default=None, repr=False, compare=False)  # the S3 options, for check()

    # ---- construction
    @classmethod
    def from_uri(cls, uri_or_path: str | os.PathLike) -> Storage:
        """A plain path or file:// -> the local file system; s3://bucket/prefix -> S3 configured from
        the environment only (a query string is refused: nothing about the store comes from the URI
        but where in it); other schemes as pyarrow resolves them, else through fsspec."""
        text = os.fspath(uri_or_path)
        if "://" not in text or text.startswith("file://"):
            path = unquote(urlsplit(text).path) if text.startswith("file://") else text
            return cls(pafs.LocalFileSystem(), Path(path).expanduser().resolve().as_posix())
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        if parts.query or parts.password:
            raise ValueError(f"storage URI {_redact(text)!r}: credentials and options come from the environment, not the URI")
        if scheme in ("s3", "s3a"):
            bucket, prefix = parts.netloc, parts.path.strip("/")
            if not bucket:
                raise ValueError(f"storage URI {text!r} names no bucket (s3://bucket/prefix)")
            opts = s3_options(os.environ)
            return cls(pafs.S3FileSystem(**opts), "/".join(p for p in (bucket, prefix) if p), "s3", s3=opts)
        try:
            fs, root = pafs.FileSystem.from_uri(text)
        except ValueError as e:  # pyarrow.lib.ArrowInvalid
            if "Unrecognized filesystem type" not in str(e):
                raise
            fs, root = _fsspec(text)
        return cls(fs, root.rstrip("/") or root, scheme)

    # ---- naming
    @property
    def uri(self) -> str:
        """For logs and /readyz: the store and root, never a credential (none is ever in it)."""
        return self.root if self.is_local else f"{self.scheme}://{self.root.lstrip('/')}"

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def endpoint(self) -> str | None:
        """The S3 endpoint in use (for messages), None for AWS itself or another store."""
        if not self.s3 or "endpoint_override" not in self.s3:
            return None
        return f"{self.s3.get('scheme', 'https')}://{self.s3['endpoint_override']}"

    @property
    def bucket(self) -> str | None:
        return None if self.is_local else self.root.lstrip("/").split("/", 1)[0]

    def path(self, *parts: str) -> str:
        """The full path inside `fs` of root/parts: empty segments and a leading '/' are dropped,
        '.' and '..' refused (a run name must not climb out of the root)."""
        segments = [s for p in parts for s in str(p).split("/") if s]
        if any(s in (".", "..") for s in segments):
            raise ValueError(f"{'/'.join(map(str, parts))!r}: '.' and '..' are not allowed in a storage path")
        return posixpath.join(self.root, *segments) if segments else self.root

    # ---- reading
    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def size(self, rel: str) -> int:
        info = self.fs.get_file_info(self.path(rel))
        if info.type != pafs.FileType.File:
            raise FileNotFoundError(f"{self.uri}/{rel}: no such file")
        return info.size

    def open_input_stream(self, rel: str):
        """A readable pyarrow stream (close it; `with` works), for streaming to an HTTP client. On an
        object store it reads in ranged GETs of whatever version is current: an object replaced while
        streamed can come out torn (see read_bytes), so stream objects that are written once."""
        return self.fs.open_input_stream(self.path(rel))

    def read_bytes(self, rel: str) -> bytes:
        """The whole object. Locally one open file, which an os.replace cannot tear. On an object
        store one ranged GET sized by a HEAD before it (a stream would read in 1 MiB GETs, each of
        whatever version is current): an object replaced in between comes back cut to the old size
        or padded with zeros (both seen against the S3 server in the tests), so the read is retried
        (backing off, 1.5 s in all) until a HEAD after it gives the size that came back. Only an object replaced and replaced
        back to the same size during one read can still slip through: write objects once."""
        if self.is_local:
            with self.open_input_stream(rel) as f:
                return f.read()
        path = self.path(rel)
        for attempt in range(READ_ATTEMPTS):
            try:
                with self.fs.open_input_file(path) as f:
                    data = f.read()
            except FileNotFoundError:
                raise
            except OSError as e:  # 416: the object shrank between the HEAD and the GET
                if "HTTP status 416" not in str(e) or attempt == READ_ATTEMPTS - 1:
                    raise
            else:
                if self.fs.get_file_info(path).size == len(data):
                    return data
            time.sleep(0.05 * 2**attempt)  # a writer busy on the object: let its upload finish
        raise OSError(f"{self.uri}/{rel} kept changing while being read ({READ_ATTEMPTS} attempts)")

    def read_json(self, rel: str):
        return json.loads(self.read_bytes(rel))

    def list(self, rel_prefix: str = "") -> list[str]:
        """Names directly under a "directory" (files and sub-directories), sorted; [] if absent."""
        selector = pafs.FileSelector(self.path(rel_prefix), recursive=False, allow_not_found=True)
        names = {posixpath.basename(i.path.rstrip("/")) for i in self.fs.get_file_info(selector)}
        return sorted(n for n in names if n and not n.startswith(TMP_PREFIX))

    def walk_files(self, rel: str = "") -> list[str]:
        """Every file below rel, as '/'-joined names relative to it, sorted; [] if absent."""
        return sorted(self._file_sizes(rel))

    def _file_sizes(self, rel: str) -> dict[str, int]:
        """{name relative to rel: size} of every file below rel (S3's empty "dir/" markers and our
        in-flight temporary files left out), from one listing."""
        base = self.path(rel)
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        files = {posixpath.relpath(i.path, base): i.size for i in self.fs.get_file_info(selector) if i.type == pafs.FileType.File}
        return {n: size for n, size in files.items() if not posixpath.basename(n).startswith(TMP_PREFIX)}

    # ---- writing: whole objects only
    def write_bytes(self, rel: str, data: bytes) -> None:
        """Replace rel with data as one object: a reader sees the old or the new content."""
        target = self.path(rel)
        if self.is_local:
            _write_local_atomic(target, [data])
            return
        with self.fs.open_output_stream(target) as f:  # nothing is visible until close completes the upload
            f.write(data)

    def write_json(self, rel: str, obj) -> None:
        self.write_bytes(rel, json.dumps(obj).encode())

    def upload_dir(self, local_dir: str | os.PathLike, rel: str) -> list[str]:
        """Copy every file under local_dir to rel/..., each as one object; returns the names copied.
        Each file is read whole before its upload starts: pyarrow's output streams complete the
        upload on close and have no abort, so a read failing half way must not reach the store."""
        local_dir = Path(local_dir)
        names = sorted(p.relative_to(local_dir).as_posix() for p in local_dir.rglob("*") if p.is_file())
        for name in names:
            self.write_bytes(f"{rel}/{name}", (local_dir / name).read_bytes())
        return names

    def download_dir(self, rel: str, local_dir: str | os.PathLike) -> list[str]:
        """Copy every file under rel into local_dir (each through a temporary name, so a partial
        download never has the real name); a file already there with the same size is skipped
        (objects are written whole, so same name and size means a finished copy). Returns the
        names fetched."""
        local_dir = Path(local_dir)
        fetched = []
        for name, size in sorted(self._file_sizes(rel).items()):
            dest = local_dir / name
            if dest.is_file() and dest.stat().st_size == size:
                continue
            with self.open_input_stream(f"{rel}/{name}") as f:
                _write_local_atomic(str(dest), iter(lambda: f.read(CHUNK), b""))
            fetched.append(name)
        return fetched

    def delete_dir(self, rel: str) -> None:
        """Remove rel and everything below it (absent: nothing to do). The root itself is refused."""
        if self.path(rel) == self.root:
            raise ValueError("delete_dir needs a path below the storage root")
        try:
            self.fs.delete_dir(self.path(rel))
        except FileNotFoundError:
            pass

    # ---- Ray Train
    def ray_train_storage(self, rel: str = "runs") -> tuple[str, pafs.FileSystem | None]:
        """(storage_path, storage_filesystem) for ray.train.RunConfig: locally the absolute path and
        None (Ray's own local handling, as today); otherwise the path inside `fs` and `fs` itself,
        so checkpoints reach the same endpoint (Ray would build an AWS-bound S3FileSystem from a
        bare s3:// URI)."""
        if self.is_local:
            return self.path(rel), None
        return self.path(rel), self.fs

    # ---- the start-up probe
    def check(self, timeout: float = 5.0) -> None:
        """Write then delete a small object under the root, with short timeouts and no retries;
        StorageUnavailable says which of unreachable endpoint / missing bucket / refused credentials
        / anything else it was. Leaves nothing behind (a failed write creates no object)."""
        fs = self.fs
        if self.s3 is not None:
            fs = pafs.S3FileSystem(**{**self.s3, "connect_timeout": timeout, "request_timeout": timeout,
                                      "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=1)})
        probe = self.path(f"{PROBE_PREFIX}{secrets.token_hex(6)}")
        try:
            if self.is_local:
                os.makedirs(self.root, exist_ok=True)
                _write_local_atomic(probe, [b"ok"])
                os.unlink(probe)
                return
            with fs.open_output_stream(probe) as f:
                f.write(b"ok")
            fs.delete_file(probe)
        except (OSError, ValueError) as e:
            kind, message = describe_error(_error_text(e), uri=self.uri, endpoint=self.endpoint, bucket=self.bucket)
            raise StorageUnavailable(message, kind) from None


# ---------------------------------------------------------------- helpers
def _write_local_atomic(target: str, chunks) -> None:
    """chunks into target through a temporary file in the same directory and os.replace (atomic
    on POSIX, NFS included); created with 0o666 less the umask, as a plain open() would."""
    directory, name = os.path.split(target)
    os.makedirs(directory or ".", exist_ok=True)
    tmp = os.path.join(directory, f"{TMP_PREFIX}{name}-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _error_text(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror and not str(e).strip():
        return e.strerror
    return str(e) or type(e).__name__


def _redact(uri: str) -> str:
    parts = urlsplit(uri)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{parts.path}"


def _fsspec(uri: str) -> tuple[pafs.FileSystem, str]:
    """A scheme pyarrow does not know, through fsspec (its own environment variables configure it)."""
    import fsspec
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    try:
        fs, root = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as e:
        raise ValueError(f"storage URI {_redact(uri)!r}: neither pyarrow nor fsspec knows this store ({e})") from None
    return PyFileSystem(FSSpecHandler(fs)), root


def storage_from_env(environ: Mapping[str, str] | None = None) -> Storage:
    """$SNRLAB_STORAGE, else the local data dir (trainer.paths.data_dir, as today)."""
    from trainer.paths import data_dir

    environ = os.environ if environ is None else environ
    return Storage.from_uri(environ.get("SNRLAB_STORAGE") or data_dir(environ.get("SNRLAB_DATA_DIR")))
