"""Train / eval transforms (SpineNet TPU input pipeline, docs/reference/SPINENET.md §1.14).

Both take ``(uint8 image [3,H,W], target in original pixels)`` and return a normalised float
image with a target per docs/CONTRACTS.md. Boxes and masks are carried as ``tv_tensors`` so
torchvision.transforms.v2 moves them with the image. The image is resized once and stays
uint8 until the final normalisation; padding happens after normalisation, so padded pixels
are exactly zero in network space (like the zero padding added by ``collate``).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from scaledet.data.images import to_rgb_tensor
from scaledet.data.input_spec import IMAGENET_MEAN, IMAGENET_STD
from scaledet.errors import UsageError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "TrainTransform", "EvalTransform", "MASK_IGNORE"]

MASK_IGNORE = 255


class _DetectionTransform:
    def __init__(self, output_size: int, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        if output_size <= 0:
            raise UsageError(f"output_size must be positive, got {output_size}")
        self.output_size = int(output_size)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]

    def _wrap(self, image: Any, target: dict | None) -> tuple[torch.Tensor, dict, Any, Any]:
        if not (isinstance(image, torch.Tensor) and image.dtype == torch.uint8 and image.ndim == 3):
            image = to_rgb_tensor(image)
        height, width = image.shape[-2:]
        target = dict(target) if target is not None else {}
        target.setdefault("orig_size", (int(height), int(width)))
        boxes = target.get("boxes")
        if boxes is None:
            boxes = torch.zeros((0, 4), dtype=torch.float32)
        boxes = tv_tensors.BoundingBoxes(torch.as_tensor(boxes, dtype=torch.float32), format="XYXY",
                                         canvas_size=(int(height), int(width)))
        mask = target.get("mask")
        if mask is not None:
            mask = torch.as_tensor(mask)
            if mask.numel() and 0 <= int(mask.min()) and int(mask.max()) <= 255:
                mask = mask.to(torch.uint8)  # nearest resizing of uint8 is the fast path
            mask = tv_tensors.Mask(mask)
        return image, target, boxes, mask

    def _normalize(self, image: torch.Tensor) -> torch.Tensor:
        image = F.to_dtype(image, torch.float32, scale=True)
        return F.normalize(image, self.mean, self.std)

    @staticmethod
    def _finish(target: dict, boxes: torch.Tensor, mask: torch.Tensor | None,
                keep: torch.Tensor | None, scale: tuple[float, float]) -> dict:
        target["boxes"] = boxes.as_subclass(torch.Tensor).float()
        for key in ("labels", "iscrowd", "difficult"):
            if key in target:
                target[key] = torch.as_tensor(target[key])
        if keep is not None:
            target["boxes"] = target["boxes"][keep]
            for key in ("labels", "iscrowd", "difficult"):
                if key in target:
                    target[key] = target[key][keep]
        if mask is not None:
            target["mask"] = mask.as_subclass(torch.Tensor).to(torch.int64)
        sy, sx = target.get("scale", (1.0, 1.0))
        target["scale"] = (float(sy) * scale[0], float(sx) * scale[1])
        return target


def _resized_shape(height: int, width: int, ratio: float) -> tuple[int, int]:
    return max(1, int(round(height * ratio))), max(1, int(round(width * ratio)))


class TrainTransform(_DetectionTransform):
    """Scale jitter, random crop, bottom/right zero pad to a square, horizontal flip.

    s ~ U[scale_range]; the image is resized (aspect kept) to fit in round(s * output_size)
    squared, randomly cropped to ``output_size`` where larger, flipped with probability
    ``hflip``, normalised, and padded to ``output_size x output_size``. Boxes of zero area
    after the crop are dropped. Randomness comes from torch's RNG (seeded per DataLoader worker).
    """

    def __init__(self, output_size: int, scale_range: tuple[float, float] = (0.5, 2.0),
                 hflip: float = 0.5, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__(output_size, mean, std)
        low, high = scale_range
        if not 0 < low <= high:
            raise UsageError(f"scale_range must satisfy 0 < min <= max, got {scale_range}")
        self.scale_range = (float(low), float(high))
        self.hflip = float(hflip)

    def __call__(self, image: Any, target: dict | None = None) -> tuple[torch.Tensor, dict]:
        image, target, boxes, mask = self._wrap(image, target)
        height, width = image.shape[-2:]
        out = self.output_size
        low, high = self.scale_range
        jitter = low + (high - low) * torch.rand(()).item()
        fit = round(jitter * out)
        new_h, new_w = _resized_shape(height, width, min(fit / height, fit / width))
        image = F.resize(image, [new_h, new_w], antialias=True)
        boxes = F.resize(boxes, [new_h, new_w])
        if mask is not None:
            mask = F.resize(mask, [new_h, new_w])  # masks resize with nearest

        if new_h > out or new_w > out:
            top = int(torch.randint(0, max(new_h - out, 0) + 1, ()).item())
            left = int(torch.randint(0, max(new_w - out, 0) + 1, ()).item())
            crop_h, crop_w = min(new_h, out), min(new_w, out)
            image = F.crop(image, top, left, crop_h, crop_w)
            boxes = F.crop(boxes, top, left, crop_h, crop_w)
            if mask is not None:
                mask = F.crop(mask, top, left, crop_h, crop_w)
        crop_h, crop_w = image.shape[-2:]
        # Clamp explicitly: older torchvision versions leave boxes outside the crop.
        boxes[:, 0::2].clamp_(0, crop_w)
        boxes[:, 1::2].clamp_(0, crop_h)

        if self.hflip > 0 and torch.rand(()).item() < self.hflip:
            image = F.horizontal_flip(image)
            boxes = F.horizontal_flip(boxes)
            if mask is not None:
                mask = F.horizontal_flip(mask)

        image = self._normalize(image)
        padding = [0, 0, out - crop_w, out - crop_h]  # left, top, right, bottom
        image = F.pad(image, padding, fill=0.0)
        if mask is not None:
            mask = F.pad(mask, padding, fill=MASK_IGNORE)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        keep = keep.as_subclass(torch.Tensor)
        return image, self._finish(target, boxes, mask, keep, (new_h / height, new_w / width))


class EvalTransform(_DetectionTransform):
    """Resize the long side to ``output_size`` (aspect kept) and normalise; ``collate`` pads."""

    def __call__(self, image: Any, target: dict | None = None) -> tuple[torch.Tensor, dict]:
        image, target, boxes, mask = self._wrap(image, target)
        height, width = image.shape[-2:]
        new_h, new_w = _resized_shape(height, width, self.output_size / max(height, width))
        if (new_h, new_w) != (height, width):
            image = F.resize(image, [new_h, new_w], antialias=True)
            boxes = F.resize(boxes, [new_h, new_w])
            if mask is not None:
                mask = F.resize(mask, [new_h, new_w])
        image = self._normalize(image)
        return image, self._finish(target, boxes, mask, None, (new_h / height, new_w / width))

