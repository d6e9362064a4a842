"""PASCAL VOC detection (+ optional semantic segmentation) data, validated when built.

Reads a ``VOCdevkit/VOC20xx``-style folder::

    Annotations/<id>.xml            boxes, class names, difficult / truncated flags, image size
    JPEGImages/<id>.jpg
    SegmentationClass/<id>.png      palette PNG of class indices 0..20, 255 = void (optional)
    ImageSets/Main/<split>.txt      or ImageSets/Segmentation/<split>.txt

plus, optionally, an SBD-style folder of extra masks (``SegmentationClassAug``: ``<id>.png``
holding class indices) used for images without an official mask. The files themselves are read
by :mod:`scaledet.data.voc_files`, as everywhere else in scaledet.

Box convention: VOC XML boxes are 1-based inclusive pixel indices. They become 0-based
continuous xyxy as ``(xmin - 1, ymin - 1, xmax, ymax)``, so a box covering the whole image is
``(0, 0, W, H)`` and its area is ``(x2 - x1) * (y2 - y1)``, the convention of
:mod:`scaledet.eval.voc` (continuous areas, no "+1").

Everything that can be checked without decoding pixels (XML syntax, class names, boxes, the
presence of every image) is checked in ``__init__``, before any training step; errors name the
file. Images and masks are decoded lazily in :meth:`VOCDetection.load_raw`.
"""
from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from scaledet.data.base import RawThenTransform
from scaledet.data.images import ImageError, load_image
from scaledet.data.voc_files import (MASK_IGNORE, VOC_CLASSES, VOCAnnotationError, VocGroundTruth,
                                     read_class_mask, read_image_set, read_voc_xml)
from scaledet.data.names import contained_name
from scaledet.errors import UsageError

__all__ = ["VOC_CLASSES", "MASK_IGNORE", "VOCAnnotationError", "VocRecord", "VOCDetection",
           "parse_voc_xml", "read_image_set", "read_class_mask"]

log = logging.getLogger(__name__)

Transform = Callable[[torch.Tensor, dict], tuple[torch.Tensor, dict]]
SEGMENTATION_MODES = ("auto", "required", "none")


@dataclass
class VocRecord:
    """One parsed XML file. ``boxes`` are 0-based continuous xyxy (see the module docstring)."""

    image_id: str
    boxes: np.ndarray          # float32 [N, 4]
    labels: np.ndarray         # int64 [N], 0..C-1
    difficult: np.ndarray      # bool [N]
    truncated: np.ndarray      # bool [N]
    size: tuple[int, int] | None  # (H, W) from <size>, None when absent or zero
    num_clipped: int = 0       # boxes that reached outside <size> and were clipped


def parse_voc_xml(path: str | Path, class_names: Sequence[str] = VOC_CLASSES, *,
                  use_difficult: bool = True) -> VocRecord:
    """One VOC XML file as training targets; raises :class:`VOCAnnotationError` naming the file."""
    xml = read_voc_xml(path)
    path = xml.path
    label_of = {name: k for k, name in enumerate(class_names)}
    boxes, labels, difficult, truncated = [], [], [], []
    num_clipped = 0
    for index, obj in enumerate(xml.objects):
        where = f"object #{index} ({obj.name})"
        if obj.name not in label_of:
            raise VOCAnnotationError(f"{path}: {where} has unknown class name {obj.name!r} "
                                     f"(expected one of {len(class_names)} classes: "
                                     f"{', '.join(class_names[:3])}, ...)")
        xmin, ymin, xmax, ymax = obj.box
        box = [xmin - 1.0, ymin - 1.0, xmax, ymax]
        if not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
            raise VOCAnnotationError(
                f"{path}: {where} has a degenerate box xmin={xmin:g} ymin={ymin:g} "
                f"xmax={xmax:g} ymax={ymax:g} (1-based inclusive pixels; need xmax >= xmin, "
                "ymax >= ymin)")
        if xml.size is not None:
            height, width = xml.size
            clipped = [min(max(box[0], 0.0), width), min(max(box[1], 0.0), height),
                       min(max(box[2], 0.0), width), min(max(box[3], 0.0), height)]
            if clipped != box:
                num_clipped += 1
                if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
                    raise VOCAnnotationError(
                        f"{path}: {where} box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) lies "
                        f"outside the {width}x{height} image given in <size>")
                box = clipped
        if obj.difficult and not use_difficult:
            continue
        boxes.append(box)
        labels.append(label_of[obj.name])
        difficult.append(obj.difficult)
        truncated.append(obj.truncated)
    return VocRecord(image_id=path.stem,
                     boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                     labels=np.asarray(labels, np.int64),
                     difficult=np.asarray(difficult, bool),
                     truncated=np.asarray(truncated, bool),
                     size=xml.size, num_clipped=num_clipped)


def _numeric_image_id(stem: str, index: int) -> int:
    # "2007_000027" -> 2007000027 keeps ids stable across splits; other names use the index.
    digits = stem.replace("_", "")
    return int(digits) if re.fullmatch(r"\d{1,18}", digits) else index


class VOCDetection(RawThenTransform):
    """Items ``(image, target)`` per docs/CONTRACTS.md from a VOC folder.

    Args:
        root: the ``VOC20xx`` folder (holding ``Annotations/`` and ``JPEGImages/``).
        split: which ids: a name looked up as ``ImageSets/Main/<split>.txt``, else
            ``ImageSets/Segmentation/<split>.txt``; ``"Segmentation/val"`` picks the folder
            explicitly; a path to a ``.txt`` list (e.g. SBD ``train_aug.txt``) is read as is;
            ``None`` (and no ``image_ids``) takes every ``Annotations/*.xml``.
        image_ids: explicit ids instead of ``split``.
        use_difficult: keep ``difficult`` objects (BlitzNet trains on them; the flag rides along
            in ``target["difficult"]`` for evaluation).
        segmentation: ``"auto"`` — use the mask when there is one, an all-255 (ignore) mask
            otherwise, so that image adds no segmentation loss; ``"required"`` — every image must
            have a mask (error at construction otherwise); ``"none"`` — masks are not read and
            targets carry no ``"mask"`` (pure detection).
        extra_masks_dir: SBD-style folder of ``<id>.png`` masks, used where
            ``SegmentationClass/<id>.png`` is missing.

    Targets: ``boxes`` float32 [N,4] (0-based continuous xyxy), ``labels`` int64 (0..19),
    ``iscrowd`` (all False), ``difficult`` bool [N], ``image_id`` int, ``file_name``,
    ``orig_size``, ``scale`` and ``mask`` int64 [H,W] (255 = ignore).
    """

    def __init__(self, root: str | Path, split: str | Path | None = None,
                 transforms: Transform | None = None, *, image_ids: Sequence[str] | None = None,
                 use_difficult: bool = True, segmentation: str = "auto",
                 extra_masks_dir: str | Path | None = None,
                 class_names: Sequence[str] = VOC_CLASSES, allow_outside_root: bool = False) -> None:
        if segmentation not in SEGMENTATION_MODES:
            raise UsageError(f"segmentation must be one of {SEGMENTATION_MODES}, got {segmentation!r}")
        if split is not None and image_ids is not None:
            raise UsageError("give either split or image_ids, not both")
        self.root = Path(root)
        self.transforms = transforms
        self.segmentation = segmentation
        self.class_names = list(class_names)
        self.extra_masks_dir = Path(extra_masks_dir) if extra_masks_dir is not None else None
        if not (self.root / "Annotations").is_dir():
            raise VOCAnnotationError(f"{self.root}: not a VOC folder (no Annotations/ inside)")
        if self.extra_masks_dir is not None and not self.extra_masks_dir.is_dir():
            raise VOCAnnotationError(f"{self.extra_masks_dir}: extra mask folder not found")

        self.ids: list[str] = [contained_name(i, f"{self.split_file or 'image_ids'}: image id", allow_outside_root)
                               for i in self._select_ids(split, image_ids)]
        if len(set(self.ids)) != len(self.ids):
            dup = sorted({i for i in self.ids if self.ids.count(i) > 1})[:5]
            raise VOCAnnotationError(f"{self.split_file or self.root}: duplicate image ids {dup}")
        self.records = [parse_voc_xml(self.root / "Annotations" / f"{image_id}.xml",
                                      self.class_names, use_difficult=use_difficult)
                        for image_id in self.ids]
        for image_id in self.ids:
            path = self.image_path_of(image_id)
            if not path.is_file():
                raise ImageError(f"{path}: image file not found (listed in "
                                 f"{self.split_file or self.root / 'Annotations'})")
        self.mask_paths: list[Path | None] = [
            self._find_mask(image_id) if segmentation != "none" else None for image_id in self.ids]
        if segmentation == "required":
            missing = [i for i, p in zip(self.ids, self.mask_paths) if p is None]
            if missing:
                raise VOCAnnotationError(
                    f"{self.root / 'SegmentationClass'}: no mask for {len(missing)} of {len(self.ids)} "
                    f"images (first: {missing[0]}.png) and segmentation='required'")
        self._index_of_image_id: dict[int, int] | None = None  # built by ground_truth()
        self.num_clipped_boxes = sum(r.num_clipped for r in self.records)
        if self.num_clipped_boxes:
            message = (f"{self.root / 'Annotations'}: clipped {self.num_clipped_boxes} boxes "
                       "reaching outside the image <size>")
            warnings.warn(message, stacklevel=2)
            log.warning(message)

    # -- construction ------------------------------------------------------------------------
    def _select_ids(self, split: str | Path | None, image_ids: Sequence[str] | None) -> list[str]:
        self.split_file: Path | None = None
        if image_ids is not None:
            ids = [str(i) for i in image_ids]
            if not ids:
                raise UsageError("image_ids is empty")
            return ids
        if split is None:
            paths = sorted((self.root / "Annotations").glob("*.xml"))
            if not paths:
                raise VOCAnnotationError(f"{self.root / 'Annotations'}: no .xml annotation files")
            return [p.stem for p in paths]
        split_path = Path(split)
        if split_path.suffix == ".txt":
            candidates = [split_path]
        elif "/" in str(split):
            candidates = [self.root / "ImageSets" / f"{split}.txt"]
        else:
            candidates = [self.root / "ImageSets" / sub / f"{split}.txt"
                          for sub in ("Main", "Segmentation")]
        for candidate in candidates:
            if candidate.is_file():
                self.split_file = candidate
                return read_image_set(candidate)
        tried = " or ".join(str(c) for c in candidates)
        raise VOCAnnotationError(f"split {str(split)!r}: list not found ({tried})")

    def _find_mask(self, image_id: str) -> Path | None:
        official = self.root / "SegmentationClass" / f"{image_id}.png"
        if official.is_file():
            return official
        if self.extra_masks_dir is not None:
            extra = self.extra_masks_dir / f"{image_id}.png"
            if extra.is_file():
                return extra
        return None

    # -- items -------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_masked(self) -> int:
        """How many images have a real (not all-ignore) mask."""
        return sum(p is not None for p in self.mask_paths)

    def __len__(self) -> int:
        return len(self.ids)

    def image_path_of(self, image_id: str) -> Path:
        return self.root / "JPEGImages" / f"{image_id}.jpg"

    def image_path(self, index: int) -> Path:
        return self.image_path_of(self.ids[index])

    def load_raw(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """``(uint8 [3,H,W] image, target in original pixels)`` with ``scale == (1.0, 1.0)``."""
        record = self.records[index]
        path = self.image_path(index)
        image = load_image(path)
        height, width = (int(s) for s in image.shape[-2:])
        if record.size is not None and record.size != (height, width):
            xml_h, xml_w = record.size
            raise ImageError(f"{path}: decoded size {height}x{width} (HxW, after EXIF rotation) "
                             f"differs from <size> {xml_h}x{xml_w} in {record.image_id}.xml")
        boxes = torch.from_numpy(record.boxes.copy())
        if record.size is None:  # nothing was clipped at parse time
            boxes[:, 0::2].clamp_(0, width)
            boxes[:, 1::2].clamp_(0, height)
        target: dict[str, Any] = {
            "boxes": boxes,
            "labels": torch.from_numpy(record.labels.copy()),
            "iscrowd": torch.zeros(len(record.labels), dtype=torch.bool),
            "difficult": torch.from_numpy(record.difficult.copy()),
            "image_id": _numeric_image_id(record.image_id, index),
            "file_name": path.name,
            "orig_size": (height, width),
            "scale": (1.0, 1.0),
        }
        if self.segmentation != "none":
            target["mask"] = self._load_mask(index, height, width)
        return image, target

    def _load_mask(self, index: int, height: int, width: int) -> torch.Tensor:
        mask_path = self.mask_paths[index]
        if mask_path is None:
            return torch.full((height, width), MASK_IGNORE, dtype=torch.int64)
        values = read_class_mask(mask_path, self.num_classes, size=(height, width))
        return torch.from_numpy(values).to(torch.int64)

    # -- evaluation --------------------------------------------------------------------------
    def ground_truth(self, image_id: int) -> VocGroundTruth:
        """The original-resolution ground truth of the item whose ``target["image_id"]`` this is."""
        if self._index_of_image_id is None:
            index_of: dict[int, int] = {}
            for index, name in enumerate(self.ids):
                number = _numeric_image_id(name, index)
                if number in index_of:
                    raise VOCAnnotationError(
                        f"{self.split_file or self.root}: images {self.ids[index_of[number]]} and {name} "
                        f"share the numeric image_id {number}, so their results cannot be told apart")
                index_of[number] = index
            self._index_of_image_id = index_of
        index = self._index_of_image_id.get(int(image_id))
        if index is None:
            raise KeyError(f"image_id {image_id} is not an image of {self!r}")
        record = self.records[index]
        return VocGroundTruth(name=record.image_id, boxes=record.boxes, labels=record.labels,
                              difficult=record.difficult, mask_path=self.mask_paths[index])

    def __repr__(self) -> str:
        num_boxes = sum(len(r.labels) for r in self.records)
        return (f"VOCDetection({self.root}, {len(self)} images, {num_boxes} boxes, "
                f"{self.num_masked} with masks)")
