import pytest
import torch
from diffusers import UNet2DModel

from trainer.models import PRESETS, build_unet


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_small_presets_run_forward(preset):
    m = build_unet(preset, in_channels=3)
    x = torch.randn(2, 3, m.config.sample_size, m.config.sample_size)
    assert m(x, torch.tensor([1, 999])).sample.shape == x.shape


def test_adm_presets_follow_the_papers_configs():
    cifar = build_unet("adm-cifar", in_channels=3).config
    assert cifar.block_out_channels == (128, 256, 256, 256) and cifar.resnet_time_scale_shift == "scale_shift"
    assert cifar.down_block_types[1] == "AttnDownBlock2D"  # attention at 16x16 of 32x32
    assert cifar.downsample_type == "resnet" and cifar.upsample_type == "resnet"
    light = build_unet("adm-256-light", in_channels=3).config
    assert light.block_out_channels == (128, 128, 256, 256, 512, 512) and light.layers_per_block == 1
    assert light.down_block_types.index("AttnDownBlock2D") == 4  # 256 / 2**4 = 16
    assert light.attention_head_dim == 64


def test_learn_sigma_and_class_conditioning(tmp_path):
    m = build_unet("tiny", in_channels=1, learn_sigma=True, num_classes=10)
    out = m(torch.randn(2, 1, 16, 16), torch.tensor([3, 4]), class_labels=torch.tensor([1, 7])).sample
    assert out.shape == (2, 2, 16, 16)
    m.save_pretrained(tmp_path)
    assert UNet2DModel.from_pretrained(tmp_path).config.num_class_embeds == 10


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ValueError, match="valid presets: " + ", ".join(PRESETS)):
        build_unet("huge", in_channels=3)
