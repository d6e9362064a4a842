"""Bilinear resizing under the two conventions scaledet meets (docs/reference/BLITZNET.md §1.4, §8.2).

``"bilinear"`` is PyTorch's ``F.interpolate(mode="bilinear", align_corners=False)`` (half-pixel
centres). ``"tf_legacy"`` is TF1's ``resize_bilinear`` with ``align_corners=False`` and
``half_pixel_centers=False``, which the BlitzNet authors' code uses: output pixel ``i`` reads the
input at ``i * in / out`` (no half-pixel shift), the lower neighbour ``floor`` of that and the upper
one clamped to the last pixel. PyTorch has no mode for it, so it is written here with index
gathers and TF's own order of operations (which also exports to ONNX).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from scaledet.errors import UsageError

RESIZE_MODES = ("bilinear", "tf_legacy")


def legacy_sources(size_in: int, size_out: int, device: torch.device | str = "cpu"
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lower and upper source index and the upper weight of each output pixel along one axis, as
    TF1's legacy bilinear resize computes them (the coordinate in float32)."""
    scale = torch.tensor(size_in / size_out, dtype=torch.float32)
    src = torch.arange(size_out, dtype=torch.float32) * scale
    low = src.floor().long().clamp(max=size_in - 1)
    high = (low + 1).clamp(max=size_in - 1)
    return low.to(device), high.to(device), (src - low.float()).to(device)


def resize_bilinear(x: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize ``[..., H, W]`` (at least 3-d for ``"bilinear"``) to ``size`` under ``mode``."""
    size = (int(size[0]), int(size[1]))
    if mode == "bilinear":
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    if mode != "tf_legacy":
        raise UsageError(f"unknown resize mode {mode!r}; allowed: {', '.join(RESIZE_MODES)}")
    if tuple(x.shape[-2:]) == size:
        return x
    top, bottom, y_frac = legacy_sources(x.shape[-2], size[0], x.device)
    left, right, x_frac = legacy_sources(x.shape[-1], size[1], x.device)
    x_frac, y_frac = x_frac.to(x.dtype), y_frac.to(x.dtype)[:, None]
    # TF's order of operations: interpolate along x in the two rows, then along y
    upper = x.index_select(-2, top)
    lower = x.index_select(-2, bottom)
    upper = upper.index_select(-1, left) + (upper.index_select(-1, right) - upper.index_select(-1, left)) * x_frac
    lower = lower.index_select(-1, left) + (lower.index_select(-1, right) - lower.index_select(-1, left)) * x_frac
    return upper + (lower - upper) * y_frac


def upsampled_labels(logits: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """The reference way from segmentation logits ``[C, h, w]`` to a label map ``[H, W]`` at
    ``size``: resize the logits bilinearly (under ``mode``), then take the argmax."""
    return resize_bilinear(logits[None].float(), size, mode)[0].argmax(dim=0)
