"""TF arithmetic options: 'SAME' padding, SpineNet down paths, ResNet width multiplier."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from scaledet.models.backbones.resnet import resnet
from scaledet.models.backbones.spinenet import spinenet
from scaledet.models.common import Conv2dSame, MaxPool2dSame, conv2d, max_pool2d, tf_same_pads


@pytest.mark.parametrize("size, kernel, stride, pads", [
    (128, 7, 2, (2, 3)), (64, 3, 2, (0, 1)), (8, 5, 4, (0, 1)), (7, 3, 2, (1, 1)), (5, 1, 2, (0, 0)),
    (1, 3, 2, (1, 1)),
])
def test_same_padding_follows_tensorflows_rule(size, kernel, stride, pads):
    assert tf_same_pads(size, kernel, stride) == pads


def test_same_conv_and_pool_pad_bottom_right():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 8, 8) - 10  # all negative: a zero pad would win a max pool
    conv = conv2d(2, 3, 3, 2, padding="same")
    assert isinstance(conv, Conv2dSame) and conv.padding == (0, 0)
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, stride=2)
    assert torch.allclose(conv(x), expected)
    pool = max_pool2d(3, 2, padding="same")
    assert isinstance(pool, MaxPool2dSame)
    assert torch.equal(pool(x), F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 3, 2))
    assert not torch.equal(pool(x), max_pool2d(3, 2)(x))  # PyTorch-style padding differs
    assert type(conv2d(2, 3, 3, 1, padding="same")) is torch.nn.Conv2d  # stride 1: nothing to change


def _tiny_spinenet(**options):
    torch.manual_seed(0)
    return spinenet("49", endpoints_num_filters=8, filter_size_scale=0.125, **options).eval()


def test_spinenet_options_keep_parameter_names_and_change_outputs():
    default = _tiny_spinenet()
    garden = _tiny_spinenet(conv_padding="same", pool_padding="same", downsample_pools="repeated")
    assert {k: v.shape for k, v in default.state_dict().items()} == {
        k: v.shape for k, v in garden.state_dict().items()}
    garden.load_state_dict(default.state_dict())
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        explicit = _tiny_spinenet(conv_padding="symmetric", pool_padding="symmetric", downsample_pools="one")
        explicit.load_state_dict(default.state_dict())
        assert all(torch.equal(a, b) for a, b in zip(default(x), explicit(x)))
        assert all(a.shape == b.shape for a, b in zip(default(x), garden(x)))
        assert not torch.allclose(default(x)[0], garden(x)[0])
    # The L4 -> L7 path (8x) has two 3x3/2 pools with "repeated", one 5x5/4 pool with "one".
    pools = [m for m in garden.modules() if isinstance(m, MaxPool2dSame)]
    assert sorted({(p.kernel_size, p.stride) for p in pools}) == [(3, 2)]
    kernels = sorted({m.kernel_size for m in default.modules() if isinstance(m, torch.nn.MaxPool2d)})
    assert kernels == [3, 5]


def test_spinenet_rejects_unknown_options():
    with pytest.raises(ValueError, match="unknown padding 'valid'"):
        spinenet("49", conv_padding="valid")
    with pytest.raises(ValueError, match="unknown downsample_pools 'two'"):
        spinenet("49", downsample_pools="two")


def test_resnet_same_padding_and_width_multiplier():
    narrow = resnet(50, frozen_bn=False, padding="same", width_multiplier=0.25)
    assert [f.channels for f in narrow.feature_info] == [128, 256, 512]
    assert narrow.conv1.out_channels == 16 and isinstance(narrow.conv1, Conv2dSame)
    assert isinstance(narrow.layer2[0].conv2, Conv2dSame) and isinstance(narrow.maxpool, MaxPool2dSame)
    assert type(narrow.layer2[0].downsample[0]) is torch.nn.Conv2d  # 1x1 stride 2 needs no padding
    plain = resnet(50, frozen_bn=False, width_multiplier=0.25)
    assert list(plain.state_dict()) == list(narrow.state_dict())
    with pytest.raises(ValueError, match="width_multiplier"):
        resnet(50, width_multiplier=0.001)
