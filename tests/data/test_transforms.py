"""Train/eval transforms: boxes and masks move with the pixels, sizes and scales are exact."""
from __future__ import annotations

import pytest
import torch

from scaledet.data.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, TrainTransform

# A white rectangle (x 20..50, y 10..30) on black, 60 high x 100 wide; mask label 3 on it.
RECT = (20, 10, 50, 30)


def _rect_sample() -> tuple[torch.Tensor, dict]:
    image = torch.zeros((3, 60, 100), dtype=torch.uint8)
    x1, y1, x2, y2 = RECT
    image[:, y1:y2, x1:x2] = 255
    mask = torch.zeros((60, 100), dtype=torch.int64)
    mask[y1:y2, x1:x2] = 3
    target = {"boxes": torch.tensor([RECT], dtype=torch.float32), "labels": torch.tensor([2]),
              "iscrowd": torch.tensor([False]), "image_id": 5, "file_name": "r.png",
              "orig_size": (60, 100), "scale": (1.0, 1.0), "mask": mask}
    return image, target


def _white_pixels(image: torch.Tensor) -> torch.Tensor:
    """Bool [H,W]: pixels at least half-white after normalisation (padding is exactly 0)."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((image * std + mean) > 0.5).all(0)


def _box_covers(box: torch.Tensor, pixels: torch.Tensor, tol: float = 1.0) -> bool:
    ys, xs = torch.nonzero(pixels, as_tuple=True)
    if len(xs) == 0:
        return False
    x1, y1, x2, y2 = box.tolist()
    return bool(xs.min() >= x1 - tol and xs.max() + 1 <= x2 + tol
                and ys.min() >= y1 - tol and ys.max() + 1 <= y2 + tol
                and abs((xs.max() + 1 - xs.min()) - (x2 - x1)) <= 2 * tol + 1
                and abs((ys.max() + 1 - ys.min()) - (y2 - y1)) <= 2 * tol + 1)


@pytest.mark.parametrize("seed", range(12))
def test_train_transform_keeps_box_mask_and_pixels_together(seed):
    torch.manual_seed(seed)
    transform = TrainTransform(64, scale_range=(0.5, 2.0), hflip=0.5)
    image, target = transform(*_rect_sample())
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    mask = target["mask"]
    assert mask.shape == (64, 64) and mask.dtype == torch.int64
    assert set(mask.unique().tolist()) <= {0, 3, 255}
    white = _white_pixels(image)
    assert len(target["boxes"]) == len(target["labels"]) == len(target["iscrowd"])
    if len(target["boxes"]) == 0:  # the crop missed the rectangle
        assert not white.any() and not mask.eq(3).any()
        return
    box = target["boxes"][0]
    assert target["labels"].tolist() == [2]
    assert _box_covers(box, white), (box, torch.nonzero(white).min(0), torch.nonzero(white).max(0))
    assert _box_covers(box, mask == 3)
    # Everywhere the mask says "rectangle" the image is white, and vice versa (up to edges).
    agree = (white == (mask == 3)).float().mean()
    assert agree > 0.97


def test_flip_mirrors_the_box_exactly():
    torch.manual_seed(0)
    transform = TrainTransform(100, scale_range=(1.0, 1.0), hflip=1.0)
    image, target = transform(*_rect_sample())
    x1, y1, x2, y2 = RECT
    assert target["boxes"].tolist() == [[100 - x2, y1, 100 - x1, y2]]
    assert target["scale"] == (1.0, 1.0)
    white = _white_pixels(image)
    assert white[y1:y2, 100 - x2:100 - x1].all() and white.sum() == (x2 - x1) * (y2 - y1)
    # Bottom padding (rows 60..99) is exactly zero in network space and ignored in the mask.
    assert image[:, 60:].eq(0).all() and target["mask"][60:].eq(255).all()


def test_small_scale_pads_bottom_right_with_zeros_and_records_scale():
    transform = TrainTransform(80, scale_range=(0.5, 0.5), hflip=0.0)
    image, target = transform(*_rect_sample())
    # round(0.5 * 80) = 40 fits a 60x100 image as 24x40.
    assert target["scale"] == pytest.approx((24 / 60, 40 / 100))
    assert image.shape == (3, 80, 80)
    assert image[:, 24:].eq(0).all() and image[:, :, 40:].eq(0).all()
    assert image[:, :24, :40].ne(0).any(0).all()  # the resized picture has no exact zeros
    assert target["mask"][24:].eq(255).all() and target["mask"][:, 40:].eq(255).all()
    assert target["mask"][:24, :40].ne(255).all()
    torch.testing.assert_close(target["boxes"], torch.tensor([[8.0, 4.0, 20.0, 12.0]]))


def test_boxes_cropped_away_are_dropped_with_their_labels():
    image = torch.full((3, 100, 100), 128, dtype=torch.uint8)
    # Scale 2 of a 50 output fits the 100x100 image as it is; a 50x50 crop at offsets 0..50
    # keeps the corner box only when both offsets are below 30 and always keeps the centre box.
    target = {"boxes": torch.tensor([[0.0, 0.0, 30.0, 30.0], [40.0, 40.0, 60.0, 60.0]]),
              "labels": torch.tensor([0, 1]), "iscrowd": torch.tensor([True, False])}
    transform = TrainTransform(50, scale_range=(2.0, 2.0), hflip=0.0)
    counts = []
    for seed in range(20):
        torch.manual_seed(seed)
        _, out = transform(image, target)
        boxes = out["boxes"]
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert ((boxes >= 0) & (boxes <= 50)).all()
        if len(boxes) == 1:
            assert out["labels"].tolist() == [1] and out["iscrowd"].tolist() == [False]
        assert out["scale"] == (1.0, 1.0)
        counts.append(len(boxes))
    assert 1 in counts and 2 in counts


def test_same_seed_same_augmentation():
    transform = TrainTransform(64)
    torch.manual_seed(3)
    a, ta = transform(*_rect_sample())
    torch.manual_seed(3)
    b, tb = transform(*_rect_sample())
    assert torch.equal(a, b) and torch.equal(ta["boxes"], tb["boxes"])


def test_eval_transform_scale_inverts_boxes():
    transform = EvalTransform(128)
    image, target = _rect_sample()
    out_image, out = transform(image, target)
    assert out_image.shape == (3, 77, 128)  # long side 128, aspect kept, no padding
    sy, sx = out["scale"]
    assert (sy, sx) == pytest.approx((77 / 60, 128 / 100))
    back = out["boxes"] / torch.tensor([sx, sy, sx, sy])
    torch.testing.assert_close(back, torch.tensor([RECT], dtype=torch.float32))
    assert out["mask"].shape == (77, 128)
    assert _box_covers(out["boxes"][0], out["mask"] == 3)
    assert _box_covers(out["boxes"][0], _white_pixels(out_image))
    assert out["orig_size"] == (60, 100) and out["image_id"] == 5


def test_eval_transform_without_target_and_normalisation():
    image = torch.full((3, 10, 20), 255, dtype=torch.uint8)
    out_image, out = EvalTransform(20)(image)
    assert out["scale"] == (1.0, 1.0) and out["orig_size"] == (10, 20)
    assert out["boxes"].shape == (0, 4)
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(out_image[:, 0, 0], expected)
