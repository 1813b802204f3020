"""UNet presets on diffusers.UNet2DModel. Presets are plain dicts of UNet2DModel kwargs."""
from __future__ import annotations

from diffusers import UNet2DModel

PRESETS: dict[str, dict] = {
    # CPU tests and demos: 16x16, two levels, attention at 8x8, ~0.5M parameters.
    "tiny": dict(
        sample_size=16,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=32,
    ),
    # 32x32, three levels, attention at 16x16.
    "small": dict(
        sample_size=32,
        block_out_channels=(64, 128, 128),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=32,
        attention_head_dim=64,
    ),
    # Debias/ADM CIFAR-10 config: 128 ch, mult (1,2,2,2), 3 res blocks, attention at 16x16,
    # scale-shift norm, residual-block up/downsampling.
    "adm-cifar": dict(
        sample_size=32,
        block_out_channels=(128, 256, 256, 256),
        layers_per_block=3,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        resnet_time_scale_shift="scale_shift",
        downsample_type="resnet",
        upsample_type="resnet",
        attention_head_dim=64,
        dropout=0.1,
    ),
    # P2/Debias 256px config: 128 ch, 1 res block, mult (1,1,2,2,4,4), attention at 16x16,
    # 64-channel heads, scale-shift norm, residual-block up/downsampling.
    "adm-256-light": dict(
        sample_size=256,
        block_out_channels=(128, 128, 256, 256, 512, 512),
        layers_per_block=1,
        down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4,
        resnet_time_scale_shift="scale_shift",
        downsample_type="resnet",
        upsample_type="resnet",
        attention_head_dim=64,
    ),
}


def build_unet(
    preset: str,
    *,
    in_channels: int,
    sample_size: int | None = None,
    num_classes: int | None = None,
    learn_sigma: bool = False,
) -> UNet2DModel:
    """A UNet2DModel from a preset. learn_sigma doubles the output channels (ADM: mean and the
    interpolation coefficient v of the log-variance)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    kwargs = dict(PRESETS[preset])
    if sample_size is not None:
        kwargs["sample_size"] = sample_size
    return UNet2DModel(
        in_channels=in_channels,
        out_channels=in_channels * (2 if learn_sigma else 1),
        num_class_embeds=num_classes,
        **kwargs,
    )
