"""SSD-style augmentation: geometry of boxes and masks, ignore values, eval scale, speed."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from scaledet.data.ssd_transforms import (SSDEvalTransform, SSDTrainTransform, photometric_distort,
                                          sample_coverage_crop)

pytestmark = pytest.mark.usefixtures("one_thread")


MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
OBJECT_LABEL = 3            # detection label; the mask stores label + 1 (0 = background)
OBJECT_MASK = OBJECT_LABEL + 1


def blue_object_scene(height: int = 120, width: int = 160, box: tuple = (50, 30, 110, 90)
                      ) -> tuple[torch.Tensor, dict]:
    """Green image with one blue rectangle (the object) and an ignore strip on the top rows."""
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    image[1] = 200
    x1, y1, x2, y2 = box
    image[:, y1:y2, x1:x2] = torch.tensor([20, 30, 230], dtype=torch.uint8)[:, None, None]
    mask = torch.zeros(height, width, dtype=torch.int64)
    mask[y1:y2, x1:x2] = OBJECT_MASK
    mask[:6] = 255
    target = {"boxes": torch.tensor([box], dtype=torch.float32),
              "labels": torch.tensor([OBJECT_LABEL]), "iscrowd": torch.tensor([False]),
              "difficult": torch.tensor([True]), "image_id": 7, "file_name": "scene.jpg",
              "mask": mask}
    return image, target


def is_blue(normalised: torch.Tensor) -> torch.Tensor:
    rgb = normalised * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]
    return rgb[2] > torch.maximum(rgb[0], rgb[1]) + 0.1


@pytest.mark.parametrize("crop", ["coverage", "iou"])
def test_boxes_and_mask_stay_on_the_object(crop: str) -> None:
    size = 96
    transform = SSDTrainTransform(size, MEAN, STD, crop=crop)
    image, target = blue_object_scene()
    checked = runs_with_ignore = runs_with_zoom_fill = 0
    for seed in range(40):
        torch.manual_seed(seed)
        out, t = transform(image, target)
        assert out.shape == (3, size, size) and out.dtype == torch.float32
        assert t["mask"].shape == (size, size) and t["mask"].dtype == torch.int64
        assert len(t["boxes"]) == len(t["labels"]) == len(t["iscrowd"]) == len(t["difficult"])
        assert set(t["mask"].unique().tolist()) <= {0, OBJECT_MASK, 255}
        runs_with_ignore += int((t["mask"] == 255).any())
        blue = is_blue(out)
        # Mask and image stay aligned: object pixels are blue, background pixels are not.
        on_object = t["mask"] == OBJECT_MASK
        if on_object.sum() > 20:
            assert blue[on_object].float().mean() > 0.9
        assert blue[t["mask"] == 0].float().mean() < 0.1
        # Zoom-out border: mean colour in the image (about 0 once normalised), background in mask.
        runs_with_zoom_fill += int(((out.abs() < 0.02).all(0) & (t["mask"] == 0)).sum() > 50)
        boxes = t["boxes"]
        assert (boxes >= 0).all() and (boxes <= size).all()
        assert ((boxes[:, 2:] - boxes[:, :2]) >= 2).all()
        for (x1, y1, x2, y2), label in zip(boxes.tolist(), t["labels"].tolist()):
            assert label == OBJECT_LABEL and t["difficult"].all()
            if x2 - x1 < 6 or y2 - y1 < 6:
                continue  # edge blur dominates tiny boxes
            inner = (slice(int(y1) + 1, int(y2) - 1), slice(int(x1) + 1, int(x2) - 1))
            assert blue[inner].float().mean() > 0.8, (seed, (x1, y1, x2, y2))
            assert (t["mask"][inner] == OBJECT_MASK).float().mean() > 0.8
            checked += 1
    assert checked >= 15 and runs_with_ignore >= 10 and runs_with_zoom_fill >= 5


def test_photometric_only_touches_the_image() -> None:
    image, target = blue_object_scene()
    plain = SSDTrainTransform(64, MEAN, STD, photometric=False, zoom_out_prob=0, crop="none",
                              hflip_prob=0)
    jitter = SSDTrainTransform(64, MEAN, STD, zoom_out_prob=0, crop="none", hflip_prob=0)
    torch.manual_seed(1)
    a, ta = plain(image, target)
    b, tb = jitter(image, target)
    assert torch.equal(ta["boxes"], tb["boxes"]) and torch.equal(ta["mask"], tb["mask"])
    assert (a - b).abs().mean() > 0.05
    expected = target["boxes"] * torch.tensor([64 / 160, 64 / 120, 64 / 160, 64 / 120])
    assert torch.allclose(ta["boxes"], expected)
    assert ta["scale"] == (64 / 120, 64 / 160)
    # Distortion stays a valid image and changes colours, not geometry.
    x = torch.rand(3, 20, 30)
    y = photometric_distort(x)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1 and not torch.equal(x, y)


def test_flip_moves_box_and_mask_together() -> None:
    image, target = blue_object_scene(box=(20, 30, 70, 90))
    transform = SSDTrainTransform(160, MEAN, STD, photometric=False, zoom_out_prob=0,
                                  crop="none", hflip_prob=1.0)
    out, t = transform(image, target)
    assert t["boxes"][0].tolist() == pytest.approx([90, 40, 140, 120])
    blue = is_blue(out)
    assert blue[:, 120].any() and not blue[:, 40].any()
    assert (t["mask"][:, 120] == OBJECT_MASK).any() and not (t["mask"][:, 40] == OBJECT_MASK).any()
    assert torch.equal(blue, t["mask"] == OBJECT_MASK)


def test_tiny_boxes_dropped_with_their_labels() -> None:
    image, target = blue_object_scene()
    target["boxes"] = torch.tensor([[50, 30, 110, 90], [10, 10, 11.5, 40]], dtype=torch.float32)
    target["labels"] = torch.tensor([3, 5])
    target["iscrowd"] = torch.tensor([False, False])
    target["difficult"] = torch.tensor([False, True])
    transform = SSDTrainTransform(160, MEAN, STD, photometric=False, zoom_out_prob=0,
                                  crop="none", hflip_prob=0)
    _, t = transform(image, target)
    assert t["labels"].tolist() == [3] and t["difficult"].tolist() == [False]
    assert t["iscrowd"].tolist() == [False] and t["boxes"].shape == (1, 4)


def test_zoom_out_mask_fill_choice() -> None:
    image, target = blue_object_scene()
    target["mask"] = torch.full((120, 160), 255, dtype=torch.int64)  # an image without a mask
    for fill, expected in ((0, {0, 255}), (255, {255})):
        transform = SSDTrainTransform(64, MEAN, STD, photometric=False, zoom_out_prob=1.0,
                                      zoom_out_range=(2.0, 2.5), crop="none",
                                      expand_mask_fill=fill)
        torch.manual_seed(0)
        _, t = transform(image, target)
        assert set(t["mask"].unique().tolist()) == expected


@pytest.mark.parametrize("crop", ["coverage", "iou"])
def test_empty_target_and_output_sizes(crop: str) -> None:
    image = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8)
    for size in (300, 512):
        torch.manual_seed(size)
        out, t = SSDTrainTransform(size, MEAN, STD, crop=crop)(image, {"boxes": torch.zeros(0, 4),
                                                             "labels": torch.zeros(0, dtype=torch.int64)})
        assert out.shape == (3, size, size) and t["boxes"].shape == (0, 4)
        assert "mask" not in t and t["orig_size"] == (50, 70)


def test_coverage_crop_semantics() -> None:
    box = torch.tensor([[40.0, 40.0, 60.0, 80.0]])
    for seed in range(30):
        torch.manual_seed(seed)
        window = sample_coverage_crop(box, 100, 120, coverages=(0.9,))
        assert window is not None
        top, left, h, w = window
        assert 0 <= top and top + h <= 100 and 0 <= left and left + w <= 120
        assert 0.5 <= w / h <= 2.0 + 0.05 and h * w >= 0.3 * 100 * 120 - 200
        inter = (min(left + w, 60) - max(left, 40)) * (min(top + h, 80) - max(top, 40))
        assert inter / (20 * 40) >= 0.9
    # Coverage, not IoU: a crop far larger than the box is fine (IoU would be ~0.07).
    torch.manual_seed(0)
    assert sample_coverage_crop(box, 100, 120, coverages=(0.9,), area_range=(0.9, 1.0)) is not None
    # Impossible: the box is the whole image and crops hold at most half of it.
    whole = torch.tensor([[0.0, 0.0, 120.0, 100.0]])
    assert sample_coverage_crop(whole, 100, 120, coverages=(0.9,), area_range=(0.3, 0.5)) is None


def test_eval_transform_scale_and_mask() -> None:
    image, target = blue_object_scene(height=120, width=200)
    out, t = SSDEvalTransform(64, MEAN, STD)(image, target)
    assert out.shape == (3, 64, 64)
    assert t["scale"] == (64 / 120, 64 / 200) and t["orig_size"] == (120, 200)
    sy, sx = t["scale"]
    assert torch.allclose(t["boxes"], target["boxes"] * torch.tensor([sx, sy, sx, sy]))
    assert torch.allclose(t["boxes"] / torch.tensor([sx, sy, sx, sy]), target["boxes"])
    assert t["mask"][0].eq(255).all() and t["mask"][32, 25] == OBJECT_MASK and t["mask"][32, 5] == 0
    assert is_blue(out)[32, 25] and not is_blue(out)[32, 5]


def test_train_speed_on_real_voc(shared_data: Path) -> None:
    root = shared_data / "voc2012_first100"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    from scaledet.data.voc import VOCDetection

    transform = SSDTrainTransform(300, MEAN, STD)
    dataset = VOCDetection(root, transforms=transform)
    torch.manual_seed(0)
    count = 50
    start = time.perf_counter()
    for index in range(count):
        image, target = dataset[index]
        assert image.shape == (3, 300, 300) and target["mask"].shape == (300, 300)
    rate = count / (time.perf_counter() - start)
    print(f"\nSSDTrainTransform(300) decode + augment: {rate:.1f} images/s "
          f"(torch threads {torch.get_num_threads()})")
    assert rate > 1.0
