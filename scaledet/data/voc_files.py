"""Readers of the PASCAL VOC file formats, the one place each is parsed.

The data set (:mod:`scaledet.data.voc`), the evaluation (:mod:`scaledet.eval.voc`) and the CLI
(``scaledet eval-results voc``) all read VOC files through this module:

* ``Annotations/<id>.xml`` — :func:`read_voc_xml`: object names, boxes, difficult / truncated
  flags and ``<size>``;
* ``ImageSets/{Main,Segmentation}/<split>.txt`` — :func:`read_image_set`;
* ``SegmentationClass/<id>.png`` — :func:`read_class_mask`.

Boxes are returned as the XML writes them (1-based inclusive pixel indices). What they mean is the
caller's choice: the data set turns them into 0-based continuous xyxy, the devkit-style evaluation
of saved results keeps them as they are, like the devkit's own result files.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from scaledet.data.images import check_pixel_limit
from scaledet.errors import DataError, MissingFileError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)
MASK_IGNORE = 255  # "void" pixels (object borders, unlabelled) of a VOC class mask


class VOCAnnotationError(DataError):
    """A VOC annotation, list or mask file that cannot be used as it is."""


class VOCFileNotFoundError(VOCAnnotationError, MissingFileError):
    """A VOC file that should exist does not (caught as either parent)."""


@dataclass(frozen=True)
class VocXmlObject:
    """One ``<object>``: ``box`` is ``(xmin, ymin, xmax, ymax)`` as written in the file."""

    name: str
    box: tuple[float, float, float, float]
    difficult: bool
    truncated: bool


@dataclass(frozen=True)
class VocXml:
    """One parsed annotation file; ``size`` is ``(H, W)`` from ``<size>``, None when absent or 0."""

    path: Path
    size: tuple[int, int] | None
    objects: tuple[VocXmlObject, ...]


@dataclass(frozen=True)
class VocGroundTruth:
    """What VOC evaluation needs of one image, in original pixels.

    ``name`` is the VOC id (``2007_000032``), ``boxes`` float32 ``[N,4]`` 0-based continuous xyxy,
    ``labels`` int64 ``[N]`` (0..C-1), ``difficult`` bool ``[N]``, ``mask_path`` the class mask at
    the image's own resolution (None: the image has none).
    """

    name: str
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    mask_path: Path | None


def _flag(obj: ET.Element, tag: str) -> bool:
    text = (obj.findtext(tag) or "0").strip()
    return text not in ("0", "", "false", "False")


def _number(node: ET.Element, tag: str, path: Path, where: str) -> float:
    text = node.findtext(tag)
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise VOCAnnotationError(f"{path}: {where} has no numeric <{tag}> (got {text!r})") from None


def _size(root: ET.Element, path: Path) -> tuple[int, int] | None:
    size = root.find("size")
    if size is None:
        return None
    try:
        width = int(float(size.findtext("width") or 0))
        height = int(float(size.findtext("height") or 0))
    except ValueError:
        raise VOCAnnotationError(f"{path}: <size> has a non-numeric width/height") from None
    return (height, width) if width > 0 and height > 0 else None


def read_voc_xml(path: str | Path) -> VocXml:
    """Parse one annotation file; errors are :class:`VOCAnnotationError` lines naming the file."""
    path = Path(path)
    if not path.is_file():
        raise VOCFileNotFoundError(f"{path}: annotation file not found")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise VOCAnnotationError(f"{path}: malformed XML ({err})") from None
    objects = []
    # Only direct <object> children: person <part>s (head, hand, foot) are not objects.
    for index, obj in enumerate(root.findall("object")):
        where = f"object #{index}"
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise VOCAnnotationError(f"{path}: {where} has no <name>")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise VOCAnnotationError(f"{path}: {where} ({name}) has no <bndbox>")
        box = tuple(_number(bndbox, tag, path, where) for tag in ("xmin", "ymin", "xmax", "ymax"))
        if not all(math.isfinite(v) for v in box) or box[2] < box[0] or box[3] < box[1]:
            # read here so that scoring (eval-results) refuses it as training does
            raise VOCAnnotationError(f"{path}: {where} ({name}) has a degenerate box xmin={box[0]:g} "
                                     f"ymin={box[1]:g} xmax={box[2]:g} ymax={box[3]:g} (need finite values, "
                                     f"xmax >= xmin and ymax >= ymin)")
        objects.append(VocXmlObject(name, box, _flag(obj, "difficult"), _flag(obj, "truncated")))
    return VocXml(path, _size(root, path), tuple(objects))


def read_image_set(path: str | Path) -> list[str]:
    """Image ids from an ImageSets list; the first token of each non-empty line (so
    ``<class>_<split>.txt`` files, whose lines are ``<id> <flag>``, read as their ids)."""
    path = Path(path)
    if not path.is_file():
        raise VOCFileNotFoundError(f"{path}: image-set list not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise VOCAnnotationError(f"{path}: image-set list is not a UTF-8 text file") from None
    ids = [line.split()[0] for line in text.splitlines() if line.strip()]
    if not ids:
        raise VOCAnnotationError(f"{path}: image-set list is empty")
    return ids


def read_class_mask(path: str | Path, num_classes: int = len(VOC_CLASSES),
                    size: tuple[int, int] | None = None) -> np.ndarray:
    """A class-index PNG as ``uint8 [H, W]``: values 0 (background), 1..num_classes, 255 (void).

    Palette ("P") PNGs give their indices, grey ("L") PNGs (SBD SegmentationClassAug) their
    values. Colour PNGs are refused: their RGB colours are not class indices. With ``size``
    (``(H, W)`` of its image) a mask of another size is an error.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            check_pixel_limit(img.size, str(path))
            mode = img.mode
            if mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
                raise VOCAnnotationError(f"{path}: mask PNG has mode {mode!r}; expected a "
                                         "palette or grey image of class indices")
            values = np.array(img)
    except DataError:  # our own message (mode, pixel limit) already names the file
        raise
    except (OSError, SyntaxError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise VOCAnnotationError(f"{path}: cannot decode mask ({reason})") from err
    if size is not None and values.shape != tuple(size):
        raise VOCAnnotationError(f"{path}: mask size {values.shape[0]}x{values.shape[1]} (HxW) "
                                 f"differs from its image {size[0]}x{size[1]}")
    valid = values[values != MASK_IGNORE]
    if valid.size and (valid.min() < 0 or valid.max() > num_classes):
        bad = int(valid.max() if valid.max() > num_classes else valid.min())
        raise VOCAnnotationError(f"{path}: mask holds label {bad}; expected 0..{num_classes} "
                                 f"or {MASK_IGNORE} (void)")
    return values.astype(np.uint8)
