import torch

from scaledet.ops.box_coder import BoxCoder


def _random_boxes(n, generator):
    xy = torch.rand(n, 2, generator=generator) * 500
    wh = torch.rand(n, 2, generator=generator) * 190 + 10  # size ratios stay inside the decode clip
    return torch.cat([xy, xy + wh], dim=1)


def test_round_trip_default_and_ssd_weights():
    g = torch.Generator().manual_seed(0)
    boxes, anchors = _random_boxes(1000, g), _random_boxes(1000, g)
    for weights in [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]:
        coder = BoxCoder(weights)
        decoded = coder.decode(coder.encode(boxes, anchors), anchors)
        torch.testing.assert_close(decoded, boxes, atol=1e-3, rtol=1e-5)


def test_identity_encodes_to_zero_and_known_shift():
    coder = BoxCoder()
    anchors = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    assert torch.allclose(coder.encode(anchors, anchors), torch.zeros(1, 4))
    shifted = torch.tensor([[5.0, 0.0, 15.0, 20.0]])  # moved right by half a width
    assert torch.allclose(coder.encode(shifted, anchors), torch.tensor([[0.5, 0.0, 0.0, 0.0]]))
    doubled = torch.tensor([[-5.0, -10.0, 15.0, 30.0]])  # same centre, twice the size
    log2 = torch.log(torch.tensor(2.0))
    assert torch.allclose(coder.encode(doubled, anchors), torch.tensor([[0.0, 0.0, log2, log2]]))


def test_decode_clips_huge_sizes():
    coder = BoxCoder()
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    boxes = coder.decode(torch.tensor([[0.0, 0.0, 100.0, 100.0]]), anchors)
    assert torch.isfinite(boxes).all()
    assert (boxes[0, 2] - boxes[0, 0]) <= 10 * 1000 / 16 + 1e-3


def test_legacy_plus_one_convention_of_the_tpu_code():
    """tensorflow/tpu decode (spinenet_tpu_ref/SOURCE.md): size = max - min + 1, centre = min + size / 2,
    max = min + exp(d) * size - 1; encode is its inverse."""
    coder = BoxCoder(pixel_offset=1.0)
    anchors = torch.tensor([[10.0, 20.0, 29.0, 59.0]])  # 20 x 40 pixels under the +1 convention
    deltas = torch.tensor([[0.5, -0.25, 0.0, 0.6931471805599453]])  # dx, dy, dw, dh
    y_min = 20.0 + 0.5 * 40 - 0.25 * 40 - 0.5 * 2 * 40
    expected = torch.tensor([[10.0 + 0.5 * 20, y_min, 10.0 + 0.5 * 20 + 20 - 1, y_min + 80 - 1]])
    decoded = coder.decode(deltas, anchors)
    torch.testing.assert_close(decoded, expected)
    torch.testing.assert_close(coder.encode(decoded, anchors), deltas)
    # without the offset the same deltas give boxes one pixel smaller at the far side
    assert not torch.allclose(BoxCoder().decode(deltas, anchors), expected)
