import torch

from scaledet.ops.matcher import IGNORE, NEGATIVE, IoUMatcher

ANCHORS = torch.tensor([
    [0.0, 0.0, 10.0, 10.0],    # 0: equals gt 0
    [5.0, 0.0, 15.0, 10.0],    # 1: IoU 1/3 with gt 0
    [100.0, 100.0, 110.0, 110.0],  # 2: far from everything
    [50.0, 50.0, 70.0, 70.0],  # 3: IoU 0.45 with gt 1? (computed below)
])


def test_no_boxes_gives_all_negative():
    matches = IoUMatcher()(torch.zeros(0, 4), ANCHORS)
    assert matches.tolist() == [NEGATIVE] * 4


def test_thresholds_and_ignore_band():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    m = IoUMatcher(0.5, 0.3, low_quality=None)(gt, ANCHORS)
    assert m.tolist() == [0, IGNORE, NEGATIVE, NEGATIVE]  # IoU 1/3 falls in [0.3, 0.5)
    m = IoUMatcher(0.5, 0.5, low_quality=None)(gt, ANCHORS)
    assert m.tolist() == [0, NEGATIVE, NEGATIVE, NEGATIVE]


def test_force_best_anchor_for_low_overlap_box():
    # gt 1 overlaps anchor 3 with IoU 16*16/(400+256-256) = 0.64? make it lower: a 12x12 box inside
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [52.0, 52.0, 64.0, 64.0]])
    iou_3 = (12 * 12) / (20 * 20)
    assert iou_3 < 0.5
    assert IoUMatcher(low_quality=None)(gt, ANCHORS).tolist() == [0, NEGATIVE, NEGATIVE, NEGATIVE]
    assert IoUMatcher(low_quality="force_best_anchor")(gt, ANCHORS).tolist() == [0, NEGATIVE, NEGATIVE, 1]
    assert IoUMatcher(low_quality="ties_keep_argmax")(gt, ANCHORS).tolist() == [0, NEGATIVE, NEGATIVE, 1]


def test_shared_best_anchor_goes_to_lower_index_and_ties_differ():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [200.0, 200.0, 210.0, 210.0]])
    gt = torch.tensor([[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 5.0, 5.0]])  # both best on anchor 0
    forced = IoUMatcher(low_quality="force_best_anchor")(gt, anchors)
    assert forced.tolist() == [0, NEGATIVE]
    # torchvision's rule gives the tied anchor to the ground truth it overlaps most: gt 1
    assert IoUMatcher(low_quality="ties_keep_argmax")(gt, anchors).tolist() == [1, NEGATIVE]


def test_degenerate_box_does_not_claim_every_anchor():
    gt = torch.tensor([[500.0, 500.0, 510.0, 510.0]])  # overlaps no anchor
    for mode in ("force_best_anchor", "ties_keep_argmax"):
        assert IoUMatcher(low_quality=mode)(gt, ANCHORS).tolist() == [NEGATIVE] * 4


def test_crowd_region_is_ignored_not_negative():
    crowd = torch.tensor([[95.0, 95.0, 120.0, 120.0]])  # covers anchor 2 entirely
    m = IoUMatcher()(torch.tensor([[0.0, 0.0, 10.0, 10.0]]), ANCHORS, crowd)
    assert m.tolist() == [0, NEGATIVE, IGNORE, NEGATIVE]
