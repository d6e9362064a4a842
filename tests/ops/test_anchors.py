import torch

from scaledet.ops.anchors import AnchorGenerator


def test_tpu_anchor_count_at_640_is_76725():
    gen = AnchorGenerator.tpu(3, 7, anchor_size=3.0)
    assert gen.num_anchors(640, 640) == 76_725
    anchors = gen(gen.grid_sizes(640, 640))
    assert sum(a.shape[0] for a in anchors) == 76_725


def test_tpu_anchor_shapes_and_centres():
    gen = AnchorGenerator.tpu(3, 7, anchor_size=4.0)
    level3 = gen([(2, 2)] + [(1, 1)] * 4)[0]
    assert level3.shape == (2 * 2 * 9, 4)
    first = level3[:9]
    centres = (first[:, :2] + first[:, 2:]) / 2
    assert torch.allclose(centres, torch.full_like(centres, 4.0))  # stride / 2
    w = first[:, 2] - first[:, 0]
    h = first[:, 3] - first[:, 1]
    assert torch.isclose(w[0], torch.tensor(32.0)) and torch.isclose(h[0], torch.tensor(32.0))
    assert torch.isclose(w[1] / h[1], torch.tensor(2.0))  # aspect 2 = w / h, scale-major order
    assert torch.isclose(w[3], torch.tensor(32.0 * 2 ** (1 / 3)))
    # the next location along x is one stride to the right
    assert torch.allclose(level3[9:18, 0] - level3[:9, 0], torch.full((9,), 8.0))


def test_torchvision_convention_matches_torchvision_generator():
    from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchors
    from torchvision.models.detection.image_list import ImageList

    # torchvision's retinanet_resnet50_fpn truncates the octave sizes to int
    sizes = tuple((x, int(x * 2 ** (1 / 3)), int(x * 2 ** (2 / 3))) for x in [32, 64, 128, 256, 512])
    tv = TVAnchors(sizes, ((0.5, 1.0, 2.0),) * 5)
    ours = AnchorGenerator([8, 16, 32, 64, 128], sizes, [0.5, 1.0, 2.0], center_offset=0.0, scale_major=False,
                           ratio_is_h_over_w=True, round_base=True)
    feats = [torch.zeros(1, 1, 256 // s, 384 // s) for s in [8, 16, 32, 64, 128]]
    ref = tv(ImageList(torch.zeros(1, 3, 256, 384), [(256, 384)]), feats)[0]
    mine = torch.cat(ours([f.shape[-2:] for f in feats]))
    assert mine.shape == ref.shape
    torch.testing.assert_close(mine, ref, atol=0, rtol=0)
