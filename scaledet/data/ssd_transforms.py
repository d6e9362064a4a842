"""SSD-style augmentation with semantic masks (BlitzNet, docs/reference/BLITZNET.md §3.4).

Train order, as in the reference: photometric distortion (image only) -> zoom-out (p 0.5) ->
random crop -> horizontal flip (p 0.5) -> resize to S x S -> drop boxes under 2 px -> normalise.
Boxes and masks travel with the image as ``tv_tensors`` through ``torchvision.transforms.v2``.
All randomness comes from torch's global RNG (seeded per DataLoader worker).

Choices and how they differ from the reference (TF 1.x BlitzNet):

* Photometric: the reference's 4 orderings (b-s-h-c, s-b-c-h, c-h-b-s, h-s-c-b) of brightness
  (additive delta +-0.125), saturation [0.5, 1.5], hue +-0.07 and contrast [0.5, 1.5], every op
  always applied. ``v2.ColorJitter`` / ``v2.RandomPhotometricDistort`` do not fit: their
  brightness is a multiplicative factor, ColorJitter draws one of 24 orders,
  RandomPhotometricDistort applies each op with a probability and also permutes channels. So
  the v2 functional kernels are composed here; brightness is added by hand. Known differences
  from TF: values are clipped to [0, 1] after every op (TF clips once at the end; torchvision's
  hue kernel needs [0, 1] input); saturation blends with the grey image (TF scales the HSV
  saturation); contrast blends with the grey mean (TF: per-channel means). After the
  distortion the image is quantised back to uint8 for the geometric steps (speed).
* Zoom-out: ``v2.RandomZoomOut`` with ratio U[1.05, 4), image filled with the dataset mean
  colour (exactly 0 after normalisation). The mask is filled with ``expand_mask_fill``, default
  0 (background) as in the reference: the padded border really holds no object, so background
  is a true label there. The cost (docs/reference/BLITZNET.md §3.3 quirk) is that an image without a mask gets
  background labels on its border; pass ``expand_mask_fill=255`` to keep such images free of
  segmentation loss.
* Crop ``"coverage"`` (default, the reference): TF ``sample_distorted_bounding_box`` semantics,
  written by hand because torchvision only has the IoU variant — a crop is accepted when it
  holds at least ``min_covered`` of the area of *some* GT box (fraction of that box inside the
  crop), with the sampler's threshold drawn from {0, .1, .3, .5, .7, .9}, area fraction in
  [0.3, 1], aspect w/h in [0.5, 2], 50 tries, else the whole image. Crop ``"iou"`` uses
  ``v2.RandomIoUCrop`` (the PyTorch SSD recipe): it needs the *IoU* of a box with the crop to
  reach the threshold, which is much stricter for small objects (a small object fully inside
  a big crop has coverage 1 but a tiny IoU), samples each side in [0.3, 1] (area down to 0.09),
  has an extra "no crop" option and re-draws the sampler instead of falling back to the full
  image. Both keep the GT boxes whose centre lies inside the crop, clipped to it.
* Resize: bilinear without antialiasing by default (TF 1.x ``resize_images``). The mask is
  resized to S x S with ``nearest-exact`` (pixel-centre aligned, so it stays on the bilinear
  image; TF 1.x nearest takes the top-left source pixel, up to half a source pixel off).
  The reference resizes the mask straight to the head resolution (75 x 75 at 300);
  here that downsampling is left to the segmentation loss (docs/reference/BLITZNET.md §3.5).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from scaledet.data.images import to_rgb_tensor
from scaledet.data.resize import resize_bilinear
from scaledet.errors import DataError, UsageError

__all__ = ["SSDTrainTransform", "SSDEvalTransform", "photometric_distort", "sample_coverage_crop",
           "crop_keeping_centres", "BLITZNET_CROP_COVERAGES"]

BLITZNET_CROP_COVERAGES = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
PER_BOX_KEYS = ("labels", "iscrowd", "difficult")
CROP_MODES = ("coverage", "iou", "none")


# ------------------------------------------------------------------------------- photometric
def _brightness(image: torch.Tensor, delta: float) -> torch.Tensor:
    return (image + delta).clamp_(0.0, 1.0)  # TF adjust_brightness adds; F.adjust_brightness scales


def photometric_distort(image: torch.Tensor, brightness: float = 0.125,
                        saturation: tuple[float, float] = (0.5, 1.5), hue: float = 0.07,
                        contrast: tuple[float, float] = (0.5, 1.5)) -> torch.Tensor:
    """Float [0, 1] image [3, H, W] -> distorted copy, in one of the reference's 4 orders."""
    def uniform(low: float, high: float) -> float:
        return low + (high - low) * torch.rand(()).item()

    ops = {
        "b": lambda x: _brightness(x, uniform(-brightness, brightness)),
        "s": lambda x: F.adjust_saturation(x, uniform(*saturation)),
        "h": lambda x: F.adjust_hue(x, uniform(-hue, hue)),
        "c": lambda x: F.adjust_contrast(x, uniform(*contrast)),
    }
    order = ("bshc", "sbch", "chbs", "hscb")[int(torch.randint(0, 4, ()).item())]
    for key in order:
        image = ops[key](image)
    return image


# ------------------------------------------------------------------------------------ crop
def sample_coverage_crop(boxes: torch.Tensor, height: int, width: int,
                         coverages: Sequence[float] = BLITZNET_CROP_COVERAGES,
                         area_range: tuple[float, float] = (0.3, 1.0),
                         aspect_range: tuple[float, float] = (0.5, 2.0),
                         trials: int = 50) -> tuple[int, int, int, int] | None:
    """``(top, left, h, w)`` of a crop that holds >= ``min_covered`` of some box's area, with
    ``min_covered`` drawn from ``coverages``; ``None`` (keep the whole image) if all ``trials``
    fail. With no boxes the whole image counts as the box (TF's behaviour).

    Hand-written: torchvision's ``RandomIoUCrop`` tests IoU, not coverage, and has no fallback
    to the whole image (see the module docstring).
    """
    min_covered = coverages[int(torch.randint(0, len(coverages), ()).item())]
    if boxes.numel() == 0:
        boxes = torch.tensor([[0.0, 0.0, float(width), float(height)]])
    # All tries are drawn at once; the first acceptable one wins, like a sequential loop.
    area = (area_range[0] + (area_range[1] - area_range[0]) * torch.rand(trials)) * height * width
    aspect = aspect_range[0] + (aspect_range[1] - aspect_range[0]) * torch.rand(trials)
    crop_w = torch.sqrt(area * aspect).round()
    crop_h = torch.sqrt(area / aspect).round()
    fits = (crop_w >= 1) & (crop_h >= 1) & (crop_w <= width) & (crop_h <= height)
    left = ((width - crop_w).clamp(min=0) + 1) * torch.rand(trials)
    top = ((height - crop_h).clamp(min=0) + 1) * torch.rand(trials)
    left, top = left.floor().clamp(max=width - crop_w), top.floor().clamp(max=height - crop_h)
    crops = torch.stack([left, top, left + crop_w, top + crop_h], dim=1)  # [T, 4]
    boxes = boxes.float()
    inter_w = (torch.minimum(crops[:, None, 2], boxes[None, :, 2])
               - torch.maximum(crops[:, None, 0], boxes[None, :, 0])).clamp(min=0)
    inter_h = (torch.minimum(crops[:, None, 3], boxes[None, :, 3])
               - torch.maximum(crops[:, None, 1], boxes[None, :, 1])).clamp(min=0)
    box_area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=1e-6)
    coverage = inter_w * inter_h / box_area[None, :]  # [T, N]: share of each box inside
    ok = fits & (coverage >= min_covered).any(dim=1)
    hits = torch.nonzero(ok).flatten()
    if hits.numel() == 0:
        return None
    k = int(hits[0])
    return int(top[k]), int(left[k]), int(crop_h[k]), int(crop_w[k])


# ------------------------------------------------------------------------------ transforms
class _SSDTransform:
    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float],
                 antialias: bool) -> None:
        if int(size) <= 0:
            raise UsageError(f"size must be positive, got {size}")
        if len(mean) != 3 or len(std) != 3:
            raise UsageError(f"mean and std need 3 values (RGB), got {mean} and {std}")
        self.size = int(size)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        self.antialias = antialias

    @staticmethod
    def _wrap(image: Any, target: dict | None
              ) -> tuple[tv_tensors.Image, dict, tv_tensors.BoundingBoxes, tv_tensors.Mask | None]:
        if not (isinstance(image, torch.Tensor) and image.dtype == torch.uint8 and image.ndim == 3):
            image = to_rgb_tensor(image)
        height, width = (int(s) for s in image.shape[-2:])
        target = dict(target) if target is not None else {}
        target.setdefault("orig_size", (height, width))
        boxes = target.get("boxes")
        boxes = torch.zeros((0, 4)) if boxes is None else torch.as_tensor(boxes, dtype=torch.float32)
        boxes = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width))
        mask = target.get("mask")
        if mask is not None:
            mask = torch.as_tensor(mask)
            if mask.shape[-2:] != (height, width):
                raise DataError(f"{target.get('file_name', 'image')}: mask {tuple(mask.shape)} "
                                 f"does not match image {height}x{width}")
            # Labels 0..C and 255 fit uint8; Mask kernels keep values (nearest, integer fill).
            mask = tv_tensors.Mask(mask.to(torch.uint8))
        return tv_tensors.Image(image), target, boxes, mask

    def _resize(self, image: torch.Tensor, boxes: torch.Tensor, mask: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        size = [self.size, self.size]
        image = F.resize(image, size, interpolation=v2.InterpolationMode.BILINEAR,
                         antialias=self.antialias)
        boxes = F.resize(boxes, size)
        if mask is not None:
            mask = F.resize(mask, size, interpolation=v2.InterpolationMode.NEAREST_EXACT)
        return image, boxes, mask

    def _finish(self, image: torch.Tensor, target: dict, boxes: torch.Tensor,
                mask: torch.Tensor | None, keep: torch.Tensor | None,
                scale: tuple[float, float], *, normalised: bool = False) -> tuple[torch.Tensor, dict]:
        if not normalised:
            image = F.to_dtype(image.as_subclass(torch.Tensor), torch.float32, scale=True)
            image = F.normalize(image, self.mean, self.std)
        boxes = boxes.as_subclass(torch.Tensor).float().clamp(0, self.size)  # resize round-off
        per_box = {key: torch.as_tensor(target[key]) for key in PER_BOX_KEYS if key in target}
        if keep is not None:  # ``boxes`` arrive filtered; the other per-box keys follow here
            per_box = {key: value[keep] for key, value in per_box.items()}
        target.update(per_box, boxes=boxes)
        if mask is not None:
            target["mask"] = mask.as_subclass(torch.Tensor).to(torch.int64)
        sy, sx = target.get("scale", (1.0, 1.0))
        target["scale"] = (float(sy) * scale[0], float(sx) * scale[1])
        return image.contiguous(), target


class SSDTrainTransform(_SSDTransform):
    """BlitzNet / SSD training augmentation to ``size x size`` (see the module docstring).

    Takes ``(uint8 image [3,H,W], target in original pixels)``; returns the normalised float
    image and the target in network pixels. ``target["scale"]`` is ``S / crop size`` (network
    pixels per original pixel; the crop offset is not recorded). Per-box keys ``labels``,
    ``iscrowd`` and ``difficult`` follow the boxes that survive.
    """

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float], *,
                 photometric: bool = True, zoom_out_prob: float = 0.5,
                 zoom_out_range: tuple[float, float] = (1.05, 4.0), expand_mask_fill: int = 0,
                 crop: str = "coverage",
                 crop_coverages: Sequence[float] = BLITZNET_CROP_COVERAGES,
                 crop_area: tuple[float, float] = (0.3, 1.0),
                 crop_aspect: tuple[float, float] = (0.5, 2.0), crop_trials: int = 50,
                 hflip_prob: float = 0.5, min_box_size: float = 2.0,
                 antialias: bool = False) -> None:
        super().__init__(size, mean, std, antialias)
        if crop not in CROP_MODES:
            raise UsageError(f"crop must be one of {CROP_MODES}, got {crop!r}")
        if not 0 <= expand_mask_fill <= 255:
            raise UsageError(f"expand_mask_fill must be a label in 0..255, got {expand_mask_fill}")
        self.photometric = photometric
        self.zoom_out = v2.RandomZoomOut(
            fill={tv_tensors.Image: [round(255 * m) for m in self.mean],
                  tv_tensors.Mask: int(expand_mask_fill)},
            side_range=zoom_out_range, p=zoom_out_prob) if zoom_out_prob > 0 else None
        self.crop = crop
        self.crop_coverages = tuple(crop_coverages)
        self.crop_area = crop_area
        self.crop_aspect = crop_aspect
        self.crop_trials = int(crop_trials)
        # The IoU crop re-draws until a sampler succeeds; its 1.0 "leave as is" option ends that.
        self.iou_crop = v2.RandomIoUCrop(min_scale=crop_area[0], max_scale=crop_area[1],
                                         min_aspect_ratio=crop_aspect[0],
                                         max_aspect_ratio=crop_aspect[1],
                                         sampler_options=[*self.crop_coverages, 1.0],
                                         trials=self.crop_trials) if crop == "iou" else None
        self.hflip_prob = float(hflip_prob)
        self.min_box_size = float(min_box_size)

    def __call__(self, image: Any, target: dict | None = None) -> tuple[torch.Tensor, dict]:
        image, target, boxes, mask = self._wrap(image, target)
        keep = torch.ones(len(boxes), dtype=torch.bool)
        if self.photometric:
            distorted = photometric_distort(F.to_dtype(image.as_subclass(torch.Tensor),
                                                       torch.float32, scale=True))
            # Back to uint8 (error < 1/255): the zoom-out canvas (up to 16x the image) and the
            # resize of it are 4-6x cheaper in uint8 than in float.
            image = tv_tensors.wrap(F.to_dtype(distorted, torch.uint8, scale=True), like=image)
        if self.zoom_out is not None:
            if mask is None:
                image, boxes = self.zoom_out(image, boxes)
            else:
                image, boxes, mask = self.zoom_out(image, boxes, mask)
        image, boxes, mask, keep = self._random_crop(image, boxes, mask, keep)
        crop_h, crop_w = image.shape[-2:]
        if self.hflip_prob > 0 and torch.rand(()).item() < self.hflip_prob:
            image, boxes = F.horizontal_flip(image), F.horizontal_flip(boxes)
            if mask is not None:
                mask = F.horizontal_flip(mask)
        image, boxes, mask = self._resize(image, boxes, mask)
        plain = boxes.as_subclass(torch.Tensor)
        big_enough = ((plain[:, 2] - plain[:, 0]) >= self.min_box_size) & \
                     ((plain[:, 3] - plain[:, 1]) >= self.min_box_size)
        keep[keep.clone()] = big_enough
        boxes = plain[big_enough]
        return self._finish(image, target, boxes, mask, keep,
                            (self.size / crop_h, self.size / crop_w))

    def _random_crop(self, image: tv_tensors.Image, boxes: tv_tensors.BoundingBoxes,
                     mask: tv_tensors.Mask | None, keep: torch.Tensor):
        """Crop, keep the boxes whose centre is inside (clipped to the crop); ``keep`` marks
        which of the caller's original boxes are still present."""
        height, width = image.shape[-2:]
        if self.crop == "none":
            return image, boxes, mask, keep
        if self.crop == "iou":
            params = self.iou_crop.make_params([image, boxes])
            if not params:
                return image, boxes, mask, keep
            top, left, crop_h, crop_w = (params[k] for k in ("top", "left", "height", "width"))
        else:
            window = sample_coverage_crop(boxes.as_subclass(torch.Tensor), height, width,
                                          self.crop_coverages, self.crop_area, self.crop_aspect,
                                          self.crop_trials)
            if window is None:
                return image, boxes, mask, keep
            top, left, crop_h, crop_w = window
        return crop_keeping_centres(image, boxes, mask, keep, (top, left, crop_h, crop_w))


def crop_keeping_centres(image: tv_tensors.Image, boxes: tv_tensors.BoundingBoxes, mask: tv_tensors.Mask | None,
                         keep: torch.Tensor, window: tuple[int, int, int, int], *, strict: bool = False):
    """Crop to ``window = (top, left, height, width)`` and keep the boxes whose centre lies inside
    it (on the border too unless ``strict``), clipped to it; ``keep`` (a mask over the caller's
    original boxes) is updated to mark the survivors."""
    top, left, crop_h, crop_w = window
    plain = boxes.as_subclass(torch.Tensor)
    cx, cy = (plain[:, 0] + plain[:, 2]) / 2, (plain[:, 1] + plain[:, 3]) / 2
    if strict:
        inside = (cx > left) & (cx < left + crop_w) & (cy > top) & (cy < top + crop_h)
    else:
        inside = (cx >= left) & (cx <= left + crop_w) & (cy >= top) & (cy <= top + crop_h)
    image = F.crop(image, top, left, crop_h, crop_w)
    cropped = F.crop(boxes, top, left, crop_h, crop_w)
    kept = cropped.as_subclass(torch.Tensor)[inside]
    kept[:, 0::2] = kept[:, 0::2].clamp(0, crop_w)  # explicit: clamping modes vary by version
    kept[:, 1::2] = kept[:, 1::2].clamp(0, crop_h)
    boxes = tv_tensors.wrap(kept, like=cropped)
    if mask is not None:
        mask = F.crop(mask, top, left, crop_h, crop_w)
    keep[keep.clone()] = inside
    return image, boxes, mask, keep


class SSDEvalTransform(_SSDTransform):
    """Plain resize to ``size x size`` (no aspect preservation) and normalise;
    ``target["scale"] = (S / H, S / W)``.

    ``resize_method="tf_legacy"`` reproduces the reference's TF1 test input bit for bit: float
    [0, 1] image, TF1 legacy bilinear resize, then ``x * (1/std) - mean/std`` (x255 - mean)."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float], *,
                 antialias: bool = False, resize_method: str = "bilinear") -> None:
        super().__init__(size, mean, std, antialias)
        self.resize_method = resize_method

    def __call__(self, image: Any, target: dict | None = None) -> tuple[torch.Tensor, dict]:
        image, target, boxes, mask = self._wrap(image, target)
        height, width = image.shape[-2:]
        scale = (self.size / height, self.size / width)
        if self.resize_method != "tf_legacy":
            image, boxes, mask = self._resize(image, boxes, mask)
            return self._finish(image, target, boxes, mask, None, scale)
        # uint8 / 255 in float64, then float32, as the reference's loader does
        pixels = (image.as_subclass(torch.Tensor).double() / 255.0).float()
        pixels = resize_bilinear(pixels, (self.size, self.size), "tf_legacy")
        inv_std = torch.tensor([1.0 / s for s in self.std], dtype=torch.float64)
        shift = torch.tensor(self.mean, dtype=torch.float64) * inv_std
        pixels = pixels * inv_std.float()[:, None, None] - shift.float()[:, None, None]
        _, boxes, mask = self._resize(image, boxes, mask)
        return self._finish(pixels, target, boxes, mask, None, scale, normalised=True)
