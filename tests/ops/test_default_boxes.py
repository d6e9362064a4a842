import math

import pytest
import torch

from scaledet.models.backbones.blitz_resnet import BlitzResNet
from scaledet.models.common import FeatureInfo
from scaledet.models.necks.blitz_streams import BlitzStreams
from scaledet.ops.default_boxes import DefaultBoxes, scale_schedule

TRUNK_INFO = [FeatureInfo(8, 4), FeatureInfo(8, 8), FeatureInfo(8, 16), FeatureInfo(8, 32)]


def narrow_streams(image_size: int, x4: bool) -> BlitzStreams:
    return BlitzStreams(TRUNK_INFO, num_down_blocks=4 if image_size >= 512 else 3, x4=x4, top_fm=8,
                        down_channels=8, down_bottleneck=4, units_per_block=1)


@pytest.mark.parametrize("image_size, x4, sizes, total", [
    (300, True, [75, 38, 19, 10, 5, 3, 1], 45_390),
    (300, False, [38, 19, 10, 5, 3, 1], 11_640),
    (512, True, [128, 64, 32, 16, 8, 4, 2, 1], 131_070),
    (512, False, [64, 32, 16, 8, 4, 2, 1], 32_766),
])
def test_map_sizes_and_box_counts(image_size, x4, sizes, total):
    streams = narrow_streams(image_size, x4)
    got = streams.source_sizes(image_size, image_size)
    assert got == [(s, s) for s in sizes]
    boxes = DefaultBoxes.blitznet(len(got))
    assert boxes.num_boxes(got) == total
    assert boxes(got).shape == (total, 4)


@pytest.mark.parametrize("image_size, x4", [(300, True), (512, False)])
def test_analytic_sizes_match_a_real_forward(image_size, x4):
    trunk = BlitzResNet((1, 1, 1, 1), (2, 2, 2, 2), stem_channels=4, expansion=4)
    streams = BlitzStreams(trunk.feature_info, num_down_blocks=4 if image_size >= 512 else 3, x4=x4, top_fm=8,
                           down_channels=8, down_bottleneck=2, units_per_block=1)
    with torch.no_grad():
        maps = streams.eval()(trunk.eval()(torch.zeros(1, 3, image_size, image_size)))
    assert [tuple(m.shape[-2:]) for m in maps] == streams.source_sizes(image_size, image_size)
    assert all(m.shape[1] == 8 for m in maps)


@pytest.mark.parametrize("layers, smallest, lo, hi, expected, extra", [
    (7, 0.04, 0.10, 0.95, [0.04, 0.10, 0.27, 0.44, 0.61, 0.78, 0.95],
     [0.063, 0.164, 0.345, 0.518, 0.690, 0.861, 1.032]),
    (6, 0.10, 0.20, 0.95, [0.10, 0.20, 0.3875, 0.575, 0.7625, 0.95], [0.141, 0.278, 0.472, 0.662, 0.851, 1.040]),
    (8, 0.02, 0.08, 0.95, [0.02, 0.08, 0.225, 0.37, 0.515, 0.66, 0.805, 0.95],
     [0.040, 0.134, 0.289, 0.437, 0.583, 0.729, 0.875, 1.020]),
])
def test_scale_schedule_matches_reference_table(layers, smallest, lo, hi, expected, extra):
    scales = scale_schedule(layers, smallest, lo, hi)
    assert scales[:-1] == pytest.approx(expected)
    squares = [math.sqrt(a * b) for a, b in zip(scales[:-1], scales[1:])]
    assert squares == pytest.approx(extra, abs=6e-4)


def test_box_order_and_centres():
    boxes = DefaultBoxes.blitznet(7)
    sizes = [(75, 75), (38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]
    out = boxes(sizes).double()
    wh = out[:, 2:] - out[:, :2]
    centre = (out[:, :2] + out[:, 2:]) / 2
    s, s_next = 0.04, 0.10
    r2, r3 = math.sqrt(2), math.sqrt(3)
    expected = torch.tensor([[s, s], [s * r2, s / r2], [s / r2, s * r2], [s * r3, s / r3], [s / r3, s * r3],
                             [math.sqrt(s * s_next)] * 2], dtype=torch.float64)
    assert torch.allclose(wh[:6], expected, atol=1e-6)
    assert torch.allclose(centre[:6], torch.full((6, 2), 0.5 / 75, dtype=torch.float64), atol=1e-6)
    # (y, x, box) order: box 6 is the next x position in the first row
    assert centre[6].tolist() == pytest.approx([1.5 / 75, 0.5 / 75])
    assert centre[6 * 75].tolist() == pytest.approx([0.5 / 75, 1.5 / 75])
    # the 1x1 map is last, centred, and not clipped (its large boxes leave [0, 1])
    assert centre[-1].tolist() == pytest.approx([0.5, 0.5])
    assert out[-1, 2] > 1.0


def test_non_square_grid_and_bad_layer_count():
    boxes = DefaultBoxes.blitznet(6)
    sizes = [(4, 8), (2, 4), (1, 2), (1, 1), (1, 1), (1, 1)]
    out = boxes(sizes)
    assert out.shape[0] == boxes.num_boxes(sizes) == (32 + 8 + 2 + 3) * 6
    centre_x = (out[:6 * 8:6, 0] + out[:6 * 8:6, 2]) / 2
    assert torch.allclose(centre_x, (torch.arange(8) + 0.5) / 8)
    with pytest.raises(ValueError, match="6 maps"):
        boxes(sizes[:5])
    with pytest.raises(ValueError, match="5 source maps"):
        DefaultBoxes.blitznet(5)
