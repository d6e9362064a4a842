"""The MindSpore NAS-FPN port's training augmentation, ``augment: port_iou_crop``.

The port's ``src/dataset.py`` (docs/reference/MINDSPORE_FORMATS.md §4), in its order:
1. random crop: the threshold is drawn from {none, 0.1, 0.3, 0.5, 0.7, 0.9}; "none" keeps the
   image. Otherwise up to 50 tries of a window with sides U(0.3, 1) of the image's, h/w in
   [0.5, 2], corners truncated to whole pixels. A try needs a box overlapping the window and a box
   whose centre lies strictly inside; it is refused when the smallest IoU of the overlapping
   boxes is below the threshold *and* the largest exceeds the threshold + 0.2. Boxes whose centre
   is inside are kept, clipped. When every try fails the image stays whole. No zoom-out.
2. stretch to ``size x size`` (OpenCV INTER_LINEAR: bilinear without antialiasing);
3. horizontal flip with probability 0.5;
4. colour jitter: brightness, contrast and saturation factors in [0.6, 1.4], in a random order
   (MindSpore's RandomColorAdjust; ``v2.ColorJitter`` does the same), on the resized uint8 image;
5. normalise.
Crowd regions are ordinary boxes in the port's training files, so by default they lose their
``iscrowd`` flag here and become positives as in the port (``crowd_as_objects=False`` keeps it).

torchvision's ``RandomIoUCrop`` accepts a window when the *largest* IoU reaches the threshold and
draws a new threshold when 50 tries fail, so the sampler is written by hand below; the crop,
resize, flip and jitter are torchvision's (via :mod:`scaledet.data.ssd_transforms`).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torchvision import tv_tensors
from torchvision.ops import box_iou
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from scaledet.data.ssd_transforms import _SSDTransform, crop_keeping_centres

__all__ = ["PortIoUCropTransform", "sample_port_crop", "PORT_CROP_MIN_IOUS"]

PORT_CROP_MIN_IOUS = (None, 0.1, 0.3, 0.5, 0.7, 0.9)


def sample_port_crop(boxes: torch.Tensor, height: int, width: int,
                     min_ious: Sequence[float | None] = PORT_CROP_MIN_IOUS, trials: int = 50,
                     side_range: tuple[float, float] = (0.3, 1.0),
                     aspect_range: tuple[float, float] = (0.5, 2.0)) -> tuple[int, int, int, int] | None:
    """``(top, left, h, w)`` of the port's crop for xyxy ``boxes``, or None to keep the image."""
    min_iou = min_ious[int(torch.randint(0, len(min_ious), ()).item())]
    if min_iou is None or boxes.numel() == 0:  # with no box no window can be accepted
        return None
    # All tries drawn at once; the first acceptable one wins, as in the port's loop.
    low, high = side_range
    crop_w = (low + (high - low) * torch.rand(trials, dtype=torch.float64)) * width
    crop_h = (low + (high - low) * torch.rand(trials, dtype=torch.float64)) * height
    left = torch.rand(trials, dtype=torch.float64) * (width - crop_w)
    top = torch.rand(trials, dtype=torch.float64) * (height - crop_h)
    windows = torch.stack([left.floor(), top.floor(), (left + crop_w).floor(), (top + crop_h).floor()], dim=1)
    aspect = crop_h / crop_w
    shaped = (aspect >= aspect_range[0]) & (aspect <= aspect_range[1]) & \
        (windows[:, 2] > windows[:, 0]) & (windows[:, 3] > windows[:, 1])
    boxes = boxes.to(torch.float64)
    iou = box_iou(boxes, windows)  # [N, T]
    overlapping = iou > 0
    smallest = torch.where(overlapping, iou, torch.inf).amin(dim=0)
    largest = torch.where(overlapping, iou, -torch.inf).amax(dim=0)
    refused = (smallest < min_iou) & (largest > min_iou + 0.2)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    centred = (cx[:, None] > windows[None, :, 0]) & (cx[:, None] < windows[None, :, 2]) & \
        (cy[:, None] > windows[None, :, 1]) & (cy[:, None] < windows[None, :, 3])
    ok = shaped & overlapping.any(dim=0) & ~refused & (centred & overlapping).any(dim=0)
    hits = torch.nonzero(ok).flatten()
    if hits.numel() == 0:
        return None
    x0, y0, x1, y1 = (int(v) for v in windows[int(hits[0])])
    return y0, x0, y1 - y0, x1 - x0


class PortIoUCropTransform(_SSDTransform):
    """The port's training augmentation to ``size x size`` (see the module docstring).

    Takes ``(uint8 image [3,H,W], target in original pixels)``; returns the normalised float image
    and the target in network pixels, ``target["scale"] = S / crop size``. Per-box keys
    ``labels``, ``iscrowd`` and ``difficult`` follow the boxes that survive the crop.
    """

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float], *,
                 min_ious: Sequence[float | None] = PORT_CROP_MIN_IOUS, trials: int = 50,
                 hflip_prob: float = 0.5, brightness: float = 0.4, contrast: float = 0.4,
                 saturation: float = 0.4, crowd_as_objects: bool = True, antialias: bool = False) -> None:
        super().__init__(size, mean, std, antialias)
        self.min_ious = tuple(min_ious)
        self.trials = int(trials)
        self.hflip_prob = float(hflip_prob)
        self.jitter = v2.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation)
        self.crowd_as_objects = crowd_as_objects

    def __call__(self, image: Any, target: dict | None = None) -> tuple[torch.Tensor, dict]:
        image, target, boxes, mask = self._wrap(image, target)
        keep = torch.ones(len(boxes), dtype=torch.bool)
        height, width = image.shape[-2:]
        window = sample_port_crop(boxes.as_subclass(torch.Tensor), height, width, self.min_ious, self.trials)
        if window is not None:
            image, boxes, mask, keep = crop_keeping_centres(image, boxes, mask, keep, window, strict=True)
        crop_h, crop_w = image.shape[-2:]
        image, boxes, mask = self._resize(image, boxes, mask)
        if self.hflip_prob > 0 and torch.rand(()).item() < self.hflip_prob:
            image, boxes = F.horizontal_flip(image), F.horizontal_flip(boxes)
            if mask is not None:
                mask = F.horizontal_flip(mask)
        image = tv_tensors.wrap(self.jitter(image.as_subclass(torch.Tensor)), like=image)
        if self.crowd_as_objects and "iscrowd" in target:
            target["iscrowd"] = torch.zeros_like(torch.as_tensor(target["iscrowd"], dtype=torch.bool))
        return self._finish(image, target, boxes, mask, keep, (self.size / crop_h, self.size / crop_w))
