"""Uploaded bytes -> ``uint8 [3, H, W]`` RGB, refusing what a service should not try to decode.

The pixels come out exactly as :func:`scaledet.data.images.load_image` gives them for the same
file (EXIF orientation, palette, alpha and 16-bit handling are the project's ``to_rgb_tensor``);
this module adds what a file on disk does not need: an empty-body check and a pixel budget
checked from the header, before any pixel is decoded (a decompression-bomb guard).
"""
from __future__ import annotations

import io

import torch
from PIL import Image, UnidentifiedImageError

from scaledet.data.images import ImageError, to_rgb_tensor

DEFAULT_MAX_PIXELS = 40_000_000  # e.g. 8000 x 5000; a 40 MP RGB image decodes to 120 MB


class UploadError(ValueError):
    """A request the service refuses; ``status`` is the HTTP code, ``kind`` a short metric label."""

    def __init__(self, status: int, kind: str, message: str):
        super().__init__(message)
        self.status = status
        self.kind = kind


def decode_upload(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "upload") -> torch.Tensor:
    """Decode an uploaded image fully; raises :class:`UploadError` with a one-line reason."""
    if not data:
        raise UploadError(400, "empty", f"{name}: empty; send the image file's bytes")
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise UploadError(413, "too_many_pixels",
                                  f"{name}: {width}x{height} = {width * height} pixels is over the limit of "
                                  f"{max_pixels}")
            # PIL decodes lazily: load() reads the whole stream, so a truncated file fails here.
            img.load()
            return to_rgb_tensor(img)
    except UploadError:
        raise
    except UnidentifiedImageError as err:
        raise UploadError(415, "not_an_image", f"{name}: not an image in a format PIL reads "
                                               f"(JPEG, PNG, BMP, TIFF, WebP, ...)") from err
    except Image.DecompressionBombError as err:
        raise UploadError(413, "too_many_pixels", f"{name}: {err}") from err
    except (ImageError, OSError, SyntaxError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UploadError(400, "undecodable", f"{name}: cannot decode image ({reason})") from err
