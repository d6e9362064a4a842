import pytest
import torch
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from scaledet.models.common import FeatureInfo
from scaledet.models.necks.fpn import FPN

IN = [FeatureInfo(8, 8), FeatureInfo(12, 16), FeatureInfo(20, 32)]


def _copy_from_torchvision(ours: FPN, tv: FeaturePyramidNetwork) -> None:
    with torch.no_grad():
        for mine, theirs in zip(ours.lateral_convs, tv.inner_blocks):
            mine.weight.copy_(theirs[0].weight)
            mine.bias.copy_(theirs[0].bias)
        for mine, theirs in zip(ours.output_convs, tv.layer_blocks):
            mine.weight.copy_(theirs[0].weight)
            mine.bias.copy_(theirs[0].bias)
        for mine, theirs in zip(ours.extra_convs, (tv.extra_blocks.p6, tv.extra_blocks.p7)):
            mine.weight.copy_(theirs.weight)
            mine.bias.copy_(theirs.bias)


def _inputs(h: int, w: int) -> list[torch.Tensor]:
    # sizes as a stride-2 backbone makes them from an odd input: ceil-halving, not exact doubling
    sizes = [(h, w), ((h + 1) // 2, (w + 1) // 2), ((h + 3) // 4, (w + 3) // 4)]
    return [torch.randn(2, f.channels, *s) for f, s in zip(IN, sizes)]


@pytest.mark.parametrize("extra_input", ["p5", "c5"])
def test_matches_torchvision_fpn_with_p6p7(extra_input):
    torch.manual_seed(0)
    ours = FPN(IN, 16, extra_input=extra_input)
    p6_in = 16 if extra_input == "p5" else IN[-1].channels
    # torchvision's LastLevelP6P7 convolves P5 exactly when in_channels == out_channels
    tv = FeaturePyramidNetwork([f.channels for f in IN], 16, extra_blocks=LastLevelP6P7(p6_in, 16))
    assert tv.extra_blocks.use_P5 == (extra_input == "p5")
    _copy_from_torchvision(ours, tv)
    features = _inputs(13, 11)
    expected = list(tv({str(i): f for i, f in enumerate(features)}).values())
    got = ours(features)
    assert len(got) == len(expected) == 5
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)


def test_feature_info_follows_upstream_and_outputs():
    fpn = FPN(IN, 24, extra_levels=2)
    assert fpn.feature_info == [FeatureInfo(24, s) for s in (8, 16, 32, 64, 128)]
    outputs = fpn(_inputs(16, 32))
    assert [tuple(o.shape[1:]) for o in outputs] == [(24, 16, 32), (24, 8, 16), (24, 4, 8), (24, 2, 4), (24, 1, 2)]
    assert FPN(IN, 24, extra_levels=0).feature_info == [FeatureInfo(24, s) for s in (8, 16, 32)]


def test_rejects_bad_configuration():
    with pytest.raises(ValueError, match="strides"):
        FPN([FeatureInfo(8, 8), FeatureInfo(8, 32)])
    with pytest.raises(ValueError, match="extra_input"):
        FPN(IN, extra_input="p4")
