"""Image decoding that survives real-world files.

Every image leaves this module as ``torch.uint8 [3, H, W]`` RGB in display orientation:
EXIF orientation is applied, grey / palette / 16-bit / alpha images become 8-bit RGB.
Alpha is composited on black (``rgb * alpha``), so transparent regions look like the zero
padding the detectors already see at image borders.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps

from scaledet.errors import DataError, UsageError

__all__ = ["ImageError", "load_image", "decode_image", "check_pixel_limit", "pil_to_rgb", "to_rgb_tensor"]

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


class ImageError(DataError):
    """An image file that is missing, unreadable or of an unsupported layout."""


# Pixel limit of every decode: an image header can claim any size, and a small compressed file
# (a 140 KB PNG of 140 Mpx) would otherwise take gigabytes. 40 Mpx is above any camera photo that
# detection data sets hold; set $SCALEDET_MAX_IMAGE_PIXELS to change it (read at each decode, so
# data-loader workers see it too).
DEFAULT_MAX_PIXELS = 40_000_000
MAX_PIXELS_ENV = "SCALEDET_MAX_IMAGE_PIXELS"


def max_image_pixels() -> int:
    raw = os.environ.get(MAX_PIXELS_ENV)
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"${MAX_PIXELS_ENV} must be a positive integer, got {raw!r}") from None
    if value <= 0:
        raise UsageError(f"${MAX_PIXELS_ENV} must be a positive integer, got {raw!r}")
    return value


def check_pixel_limit(size: tuple[int, int], name: str) -> None:
    """Refuse, before decoding, an image whose header claims more pixels than allowed."""
    width, height = size
    limit = max_image_pixels()
    if width * height > limit:
        raise ImageError(f"{name}: image of {width}x{height} = {width * height / 1e6:.1f} Mpx is over the "
                         f"{limit / 1e6:g} Mpx limit (raise ${MAX_PIXELS_ENV} if it is meant)")


def load_image(path: str | Path) -> torch.Tensor:
    """Decode ``path`` fully into ``uint8 [3, H, W]`` RGB; raises :class:`ImageError`."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: image file not found")
    return decode_image(path, str(path))


def decode_image(source: str | Path | BinaryIO, name: str) -> torch.Tensor:
    """A file name or an open binary stream to ``uint8 [3, H, W]`` RGB (``name`` for errors)."""
    try:
        with Image.open(source) as img:
            check_pixel_limit(img.size, name)
            # Decoding is lazy in PIL; load() forces the whole stream so truncation shows here
            # and not as a silently grey bottom half.
            img.load()
            rgb = pil_to_rgb(img, name=name)
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ImageError(f"{name}: cannot decode image ({reason})") from err
    return _pil_rgb_to_tensor(rgb)


def pil_to_rgb(img: Image.Image, name: str = "<image>") -> Image.Image:
    """Apply EXIF orientation and convert any PIL mode to 8-bit RGB."""
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        # Palette images may carry transparency in their palette.
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in _ALPHA_MODES:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
        rgb = rgba[..., :3] * (rgba[..., 3:4] / 255.0)
        return Image.fromarray(np.round(rgb).astype(np.uint8), "RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        gray = _high_depth_to_uint8(np.asarray(img), mode, name)
        return Image.fromarray(gray, "L").convert("RGB")
    try:
        return img.convert("RGB")  # "1", "L", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", ...
    except (ValueError, OSError) as err:
        raise ImageError(f"{name}: unsupported image mode {mode!r} ({err})") from err


def _high_depth_to_uint8(arr: np.ndarray, mode: str, name: str) -> np.ndarray:
    """Scale a 16/32-bit or float grey image to 8 bits by its value range, never clipping."""
    values = arr.astype(np.float64)
    if values.size == 0:
        return values.astype(np.uint8)
    if mode.startswith("I;16"):
        low, high = 0.0, 65535.0
    elif mode == "F" and values.min() >= 0.0 and values.max() <= 1.0:
        low, high = 0.0, 1.0
    elif mode == "I" and values.min() >= 0 and values.max() <= 65535:
        # PIL opens 16-bit PNGs as "I" in some versions: use the 16-bit range, as for "I;16".
        low, high = 0.0, 65535.0
    else:
        low, high = float(values.min()), float(values.max())
        if not np.isfinite(low) or not np.isfinite(high):
            raise ImageError(f"{name}: image mode {mode!r} holds non-finite values")
        if high == low:
            high = low + 1.0
    return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)


def _pil_rgb_to_tensor(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def to_rgb_tensor(x: Any) -> torch.Tensor:
    """Turn a path, PIL image, numpy array or tensor into ``uint8 [3, H, W]`` RGB.

    numpy arrays are ``HW`` (grey) or ``HWC`` (C = 1, 3, 4); tensors are ``HW`` or ``CHW``.
    Float data is read on the [0, 1] scale, or on [0, 255] when its maximum exceeds 1.
    uint16 data is scaled by 65535. Four channels are RGBA (composited on black).
    """
    if isinstance(x, (str, Path)):
        return load_image(x)
    if isinstance(x, Image.Image):
        return _pil_rgb_to_tensor(pil_to_rgb(x))
    if isinstance(x, np.ndarray):
        if x.ndim == 3:
            x = x.transpose(2, 0, 1)  # HWC -> CHW
        return _chw_to_uint8_rgb(torch.from_numpy(np.ascontiguousarray(x)), "numpy array")
    if isinstance(x, torch.Tensor):
        return _chw_to_uint8_rgb(x.detach().cpu(), "tensor")
    raise TypeError(f"cannot make an image from {type(x).__name__}; "
                    "expected a path, PIL image, numpy array or tensor")


def _chw_to_uint8_rgb(t: torch.Tensor, what: str) -> torch.Tensor:
    if t.ndim == 2:
        t = t.unsqueeze(0)
    if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
        layout = "HW or HWC" if what == "numpy array" else "HW or CHW"
        raise ImageError(f"{what} of shape {tuple(t.shape)} is not an image ({layout}, 1/3/4 channels)")
    if t.dtype == torch.uint8:
        out = t
    elif t.dtype == torch.uint16 or (t.dtype == torch.int32 and t.numel() and t.max() > 255):
        out = (t.double() * (255.0 / 65535.0)).round().to(torch.uint8)
    elif t.dtype.is_floating_point:
        if t.numel() and not torch.isfinite(t).all():
            raise ImageError(f"{what} image holds non-finite values")
        top = 1.0 if (t.numel() == 0 or float(t.max()) <= 1.0) else 255.0
        out = (t.double() * (255.0 / top)).round().clamp(0, 255).to(torch.uint8)
    else:
        out = t.clamp(0, 255).to(torch.uint8)
    if out.shape[0] == 1:
        out = out.expand(3, -1, -1)
    elif out.shape[0] == 4:
        alpha = out[3:4].double() / 255.0
        out = (out[:3].double() * alpha).round().to(torch.uint8)
    return out.contiguous()
