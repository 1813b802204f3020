"""Shared evaluator fixtures: tiny random-init UNets and checkpoints (CPU, seconds)."""
from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DModel

from evaluator.sampling import Denoiser


def tiny_unet(channels: int = 1, size: int = 8, num_classes: int | None = None, learn_sigma: bool = False,
              seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=size, in_channels=channels, out_channels=channels * (2 if learn_sigma else 1),
        block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        num_class_embeds=num_classes,
    ).eval()


def linear_abar(T: int = 1000) -> torch.Tensor:
    from trainer.schedules import get_schedule

    return get_schedule("linear", T).alphas_cumprod


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """On this oversubscribed 2-core machine torch's 2-thread OpenMP pool spins against other
    processes: one thread is 4-15x faster for these tiny models (and Inception). Restored after
    each module so other packages' tests keep the default."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def make_denoiser():
    def make(channels=1, size=8, num_classes=None, learn_sigma=False, target="eps", seed=0):
        unet = tiny_unet(channels, size, num_classes, learn_sigma, seed)
        return Denoiser(unet, linear_abar(), target=target, learn_sigma=learn_sigma)

    return make


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """An isolated SNRLAB_DATA_DIR whose weights/ links the fetched Inception copy (so the real
    weights are used, the tests never download, and caches start empty)."""
    from evaluator import weights

    d = tmp_path_factory.mktemp("snrlab-data")
    try:
        src = weights.resolve()
    except weights.InceptionWeightsMissing:
        src = None  # FID tests then fail with the resolver's message
    if src is not None and src.kind == "fid_helper":
        (d / "weights").mkdir()
        (d / "weights" / weights.WHEEL_FILE).symlink_to(src.path)
    return d


def write_checkpoint(directory, *, dataset: str = "digits", class_conditional: bool = False, learn_sigma: bool = False,
                     target: str = "eps", size: int = 8, seed: int = 0):
    """A trainer-layout checkpoint holding a random-init tiny UNet (trainer.checkpoint format)."""
    from trainer.checkpoint import save_checkpoint
    from trainer.config import TrainConfig

    channels = 3 if dataset == "colors" else 1
    cfg = TrainConfig(dataset={"name": dataset, "resolution": size}, target=target, learn_sigma=learn_sigma,
                      class_conditional=class_conditional)
    unet = tiny_unet(channels, size, 10 if (class_conditional and dataset == "digits") else (4 if class_conditional else None),
                     learn_sigma, seed)
    opt = torch.optim.SGD(unet.parameters(), lr=0.0)
    return save_checkpoint(directory, cfg=cfg, model=unet, ema=unet, optimizer=opt, step=0)
