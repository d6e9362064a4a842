"""Mean IoU: real VOC masks against an independent per-class set computation."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from scaledet.eval.miou import ConfusionMatrix

def _independent_iou(pairs: list[tuple[np.ndarray, np.ndarray]], num_classes: int):
    """Per-class IoU from boolean set operations over all pixels whose target is not void."""
    intersections = np.zeros(num_classes)
    unions = np.zeros(num_classes)
    correct = total = 0
    for pred, target in pairs:
        valid = target != 255
        for c in range(num_classes):
            in_pred, in_target = (pred == c) & valid, (target == c) & valid
            intersections[c] += np.logical_and(in_pred, in_target).sum()
            unions[c] += np.logical_or(in_pred, in_target).sum()
        correct += (pred[valid] == target[valid]).sum()
        total += valid.sum()
    present = unions > 0
    return intersections[present] / unions[present], present, correct / total


def _perturbed_prediction(target: np.ndarray, other: np.ndarray, rng: np.random.Generator):
    """A plausible wrong prediction: the mask shifted, a block pasted from another real mask,
    void turned into background, and some salt noise."""
    pred = np.roll(target, shift=(int(rng.integers(-15, 16)), int(rng.integers(-15, 16))),
                   axis=(0, 1)).copy()
    h, w = min(pred.shape[0], other.shape[0]) // 2, min(pred.shape[1], other.shape[1]) // 2
    pred[:h, :w] = other[:h, :w]
    pred[pred == 255] = 0
    noise = rng.random(pred.shape) < 0.02
    pred[noise] = rng.integers(0, 21, int(noise.sum()))
    return pred


def test_matches_independent_computation_on_real_masks(voc100: Path) -> None:
    from PIL import Image

    paths = sorted((voc100 / "SegmentationClass").glob("*.png"))[:12]
    masks = [np.array(Image.open(p)) for p in paths]
    assert all(m.dtype == np.uint8 and (m == 255).any() for m in masks)  # void borders present
    rng = np.random.default_rng(0)
    pairs = [(_perturbed_prediction(m, masks[(i + 1) % len(masks)], rng), m)
             for i, m in enumerate(masks)]

    matrix = ConfusionMatrix(21)
    for pred, target in pairs:
        # numpy and torch inputs, uint8 and int64 dtypes, 2-D and batched shapes all count the same
        if len(pred) % 2:
            matrix.update(torch.from_numpy(pred).long()[None], torch.from_numpy(target)[None])
        else:
            matrix.update(pred, target)
    result = matrix.compute()

    iou, present, pixel_acc = _independent_iou(pairs, 21)
    ours = np.array(result["iou_per_class"])
    np.testing.assert_allclose(ours[present], iou, rtol=1e-12)
    assert np.isnan(ours[~present]).all()
    assert result["miou"] == pytest.approx(iou.mean(), rel=1e-12)
    assert result["pixel_acc"] == pytest.approx(pixel_acc, rel=1e-12)
    assert 0.2 < result["miou"] < 0.95  # a perturbed prediction is neither perfect nor useless

    perfect = ConfusionMatrix(21)
    for _, target in pairs:
        perfect.update(np.where(target == 255, 0, target), target)
    assert perfect.compute()["miou"] == pytest.approx(1.0)


def test_absent_classes_are_left_out_of_the_mean() -> None:
    target = torch.tensor([[0, 0, 1, 1], [255, 255, 1, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 2, 1, 0]])
    matrix = ConfusionMatrix(4)
    matrix.update(pred, target)
    result = matrix.compute()
    # class 0: inter 1, union 3; class 1: inter 3, union 5; class 2 only on void pixels; class 3 none
    assert result["iou_per_class"][:2] == pytest.approx([1 / 3, 3 / 5])
    assert math.isnan(result["iou_per_class"][2]) and math.isnan(result["iou_per_class"][3])
    assert result["miou"] == pytest.approx((1 / 3 + 3 / 5) / 2)
    assert result["pixel_acc"] == pytest.approx(4 / 6)
    matrix.reset()
    assert math.isnan(matrix.compute()["miou"])


def test_bad_input_is_rejected() -> None:
    matrix = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="shapes"):
        matrix.update(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="pred has class indices outside 0..2"):
        matrix.update(np.full((2, 2), 3), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="target has class indices"):
        matrix.update(np.zeros((2, 2)), np.full((2, 2), 7))
    assert int(matrix.matrix.sum()) == 0  # rejected batches leave no trace
