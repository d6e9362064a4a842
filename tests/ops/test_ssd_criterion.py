import math

import pytest
import torch

from scaledet.ops.box_coder import BoxCoder
from scaledet.ops.ssd_criterion import SSDCriterion, downsample_mask, hard_negative_mask


def test_two_positives_mine_exactly_the_six_hardest_negatives_over_the_batch():
    torch.manual_seed(0)
    ce = torch.rand(2, 10)
    positive = torch.zeros(2, 10, dtype=torch.bool)
    positive[0, 1] = positive[1, 4] = True
    ce[positive] = 100.0  # positives must never be counted as negatives
    candidate = ~positive
    candidate[1, 7] = False  # an ignored box (e.g. on a crowd) is never mined either
    ce[1, 7] = 50.0
    mined = hard_negative_mask(ce, positive, candidate, 3.0)
    assert int(mined.sum()) == 6
    negatives = ce[candidate]
    expected = set(negatives.topk(6).values.tolist())
    assert set(ce[mined].tolist()) == expected
    assert not (mined & positive).any() and not mined[1, 7]


def test_negative_count_is_capped_by_the_per_image_box_count():
    ce = torch.arange(16, dtype=torch.float32).reshape(2, 8)
    positive = torch.zeros(2, 8, dtype=torch.bool)
    positive[0, 0] = positive[0, 1] = positive[1, 0] = True  # 3 positives: 3*3 = 9 > 8 - 3 = 5
    mined = hard_negative_mask(ce, positive, ~positive, 3.0)
    assert int(mined.sum()) == 5
    assert mined[1, 3:].all()  # the five largest losses all sit in the second image


def test_no_positives_mines_nothing():
    ce = torch.rand(3, 20)
    positive = torch.zeros(3, 20, dtype=torch.bool)
    assert not hard_negative_mask(ce, positive, ~positive, 3.0).any()


def grid_boxes() -> torch.Tensor:
    """16 normalised default boxes: a 4x4 grid of 0.25-wide squares."""
    ys, xs = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    x1, y1 = xs.reshape(-1) / 4, ys.reshape(-1) / 4
    return torch.stack([x1, y1, x1 + 0.25, y1 + 0.25], dim=1)


def test_matching_coding_and_loss_values_on_a_hand_case():
    anchors = grid_boxes()
    criterion = SSDCriterion(num_classes=3)
    # GT equals box 5 exactly (pixels of a 100x200 input: x in [25, 50]*2, y in [25, 50])
    target = {"boxes": torch.tensor([[50.0, 25.0, 100.0, 50.0]]), "labels": torch.tensor([2])}
    cls_t, box_t, positive = criterion.targets(anchors, [target], (100, 200))
    assert positive[0].nonzero().flatten().tolist() == [5]
    assert cls_t[0, 5] == 3 and (cls_t[0, torch.arange(16) != 5] == 0).all()
    assert torch.allclose(box_t[0, 5], torch.zeros(4), atol=1e-6)

    conf = torch.zeros(1, 16, 4)  # uniform scores: CE = log 4 for every box
    loc = torch.zeros(1, 16, 4)
    loc[0, 5] = torch.tensor([0.5, -2.0, 0.0, 0.0])  # smooth-L1: 0.125 + 1.5
    out = criterion(loc, conf, None, anchors, [target], (100, 200))
    assert out["num_positives"] == 1
    assert out["det_cls_loss"].item() == pytest.approx(4 * math.log(4))  # 1 positive + 3 negatives
    assert out["det_loc_loss"].item() == pytest.approx(1.625)
    assert out["seg_loss"].item() == 0.0
    assert out["loss"].item() == pytest.approx(4 * math.log(4) + 1.625)


def test_best_box_is_forced_positive_below_threshold_and_variances_are_used():
    anchors = grid_boxes()
    criterion = SSDCriterion(num_classes=1)
    # small GT inside box 0 (IoU 0.25 < 0.5): still gets its best box
    gt = torch.tensor([[0.0, 0.0, 0.125, 0.125]])
    cls_t, box_t, positive = criterion.targets(anchors, [{"boxes": gt * 8, "labels": torch.tensor([0])}], (8, 8))
    assert positive[0].nonzero().flatten().tolist() == [0]
    expected = torch.tensor([(0.0625 - 0.125) / 0.25 / 0.1, (0.0625 - 0.125) / 0.25 / 0.1,
                             math.log(0.5) / 0.2, math.log(0.5) / 0.2])
    assert torch.allclose(box_t[0, 0], expected, atol=1e-5)
    assert torch.allclose(BoxCoder((10, 10, 5, 5)).decode(box_t[0, 0], anchors[0]), gt[0], atol=1e-6)


def test_no_positive_batch_is_finite_with_zero_loc_loss_and_still_has_gradients():
    anchors = grid_boxes()
    criterion = SSDCriterion(num_classes=2)
    loc = torch.randn(2, 16, 4, requires_grad=True)
    conf = torch.randn(2, 16, 3, requires_grad=True)
    seg = torch.randn(2, 3, 4, 4, requires_grad=True)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    out = criterion(loc, conf, seg, anchors, [empty, dict(empty)], (32, 32))
    assert torch.isfinite(out["loss"]) and out["loss"].item() == 0.0
    assert out["det_loc_loss"].item() == 0.0 and out["num_positives"] == 0
    out["loss"].backward()
    assert loc.grad is not None and conf.grad is not None and seg.grad is not None


def test_seg_loss_ignores_255_and_averages_over_valid_pixels_of_the_batch():
    criterion = SSDCriterion(num_classes=2)
    seg = torch.zeros(2, 3, 2, 2)
    seg[0, 1] = 10.0  # image 0 predicts class 1 confidently everywhere
    mask0 = torch.tensor([[1, 1], [255, 255]])
    mask1 = torch.tensor([[0, 255], [255, 7]])  # 7 > C is dropped like 255
    out = criterion.segmentation_loss(seg, [{"mask": mask0}, {"mask": mask1}], (2, 2))
    confident = -torch.log_softmax(torch.tensor([0.0, 10.0, 0.0]), 0)[1].item()
    assert out.item() == pytest.approx((2 * confident + math.log(3)) / 3)


def test_seg_ground_truth_is_downsampled_by_nearest_and_missing_masks_are_ignored():
    mask = torch.arange(16).reshape(1, 4, 4)
    assert downsample_mask(mask, (2, 2)).tolist() == [[[0, 2], [8, 10]]]
    criterion = SSDCriterion(num_classes=20)
    seg = torch.zeros(2, 21, 2, 2, requires_grad=True)
    # image 1 has no mask: only image 0's four pixels count; all-ignore batch gives exactly 0
    out = criterion.segmentation_loss(seg, [{"mask": torch.ones(4, 4, dtype=torch.long)}, {}], (4, 4))
    assert out.item() == pytest.approx(math.log(21))
    none = criterion.segmentation_loss(seg, [{}, {"mask": torch.full((4, 4), 255)}], (4, 4))
    assert none.item() == 0.0
    none.backward()
    assert seg.grad is not None and torch.isfinite(seg.grad).all()


def test_crowd_boxes_never_become_positives_and_their_boxes_are_not_mined():
    anchors = grid_boxes()
    criterion = SSDCriterion(num_classes=2)
    target = {"boxes": torch.tensor([[0.0, 0.0, 0.25, 0.25], [0.5, 0.5, 1.0, 1.0]]),
              "labels": torch.tensor([0, 1]), "iscrowd": torch.tensor([False, True])}
    cls_t, _, positive = criterion.targets(anchors, [target], (1, 1))
    assert positive[0].nonzero().flatten().tolist() == [0]
    assert (cls_t[0, [10, 11, 14, 15]] == -1).all()  # boxes inside the crowd are ignored


def test_autocast_inputs_give_fp32_losses():
    anchors = grid_boxes()
    criterion = SSDCriterion(num_classes=2)
    target = {"boxes": torch.tensor([[0.0, 0.0, 8.0, 8.0]]), "labels": torch.tensor([1])}
    out = criterion(torch.zeros(1, 16, 4, dtype=torch.bfloat16), torch.zeros(1, 16, 3, dtype=torch.bfloat16),
                    torch.zeros(1, 3, 2, 2, dtype=torch.bfloat16), anchors, [target], (32, 32))
    assert out["loss"].dtype == torch.float32


def test_mismatched_box_count_is_a_clear_error():
    with pytest.raises(ValueError, match="16 default boxes"):
        SSDCriterion(num_classes=2)(torch.zeros(1, 15, 4), torch.zeros(1, 15, 3), None, grid_boxes(), [{}], (8, 8))


def test_distributed_normaliser_splits_the_global_count_between_processes():
    """With a stand-in all-reduce that doubles the count (two processes holding equal batches),
    each process's loss is its share of the global-batch loss: half of the local loss x 2/2."""
    import torch

    from scaledet.ops.ssd_criterion import SSDCriterion

    g = torch.Generator().manual_seed(0)
    boxes = torch.tensor([[0.1, 0.1, 0.4, 0.5], [0.5, 0.5, 0.9, 0.8], [0.2, 0.6, 0.3, 0.9]])
    default = torch.cat([boxes, torch.rand(40, 2, generator=g).mul(0.5).repeat(1, 2) + torch.tensor([0, 0, .3, .3])])
    loc = torch.randn(2, len(default), 4, generator=g)
    conf = torch.randn(2, len(default), 4, generator=g)
    seg = torch.randn(2, 4, 8, 8, generator=g)
    targets = [{"boxes": boxes * 64, "labels": torch.tensor([0, 1, 2]), "mask": torch.randint(0, 4, (64, 64))}] * 2
    crit = SSDCriterion(3)
    local = crit(loc, conf, seg, default, targets, (64, 64))
    crit.distribute_normalizer(lambda count: count * 2, 2)
    shared = crit(loc, conf, seg, default, targets, (64, 64))
    for key in ("det_cls_loss", "det_loc_loss", "seg_loss"):
        torch.testing.assert_close(shared[key], local[key])  # (2n / 2) == n: same value, global denominator
    crit.distribute_normalizer(lambda count: count * 4, 2)  # the other process had three times as many
    halved = crit(loc, conf, seg, default, targets, (64, 64))
    for key in ("det_cls_loss", "det_loc_loss", "seg_loss"):
        torch.testing.assert_close(halved[key], local[key] / 2)
