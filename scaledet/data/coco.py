"""COCO-format detection data, validated when the data set is built.

Everything that can be wrong in the annotation file is found in ``__init__`` (before any
training step) and reported with the file name and the offending id. Images are decoded
lazily in ``__getitem__``; a bad image raises :class:`~scaledet.data.images.ImageError`.
"""
from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from scaledet.data.images import ImageError, load_image
from scaledet.data.base import RawThenTransform
from scaledet.data.names import contained_name
from scaledet.errors import DataError

__all__ = ["AnnotationError", "CocoDetection", "read_coco_json"]

log = logging.getLogger(__name__)

Transform = Callable[[torch.Tensor, dict], tuple[torch.Tensor, dict]]


class AnnotationError(DataError):
    """A COCO annotation file that cannot be used as it is."""


def read_coco_json(path: str | Path) -> dict[str, Any]:
    """Parse a COCO json file; raises :class:`AnnotationError` naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"{path}: annotation file not found")
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{path}: malformed JSON at line {err.lineno} column {err.colno} "
                              f"(char {err.pos}): {err.msg}") from err
    except UnicodeDecodeError as err:
        raise AnnotationError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: top level must be a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise AnnotationError(f"{path}: missing top-level key {key!r}")
        if not isinstance(data[key], list):
            raise AnnotationError(f"{path}: {key!r} must be a list, got {type(data[key]).__name__}")
    return data


def _require(entry: Any, keys: Sequence[str], where: str, path: Path) -> None:
    if not isinstance(entry, dict):
        raise AnnotationError(f"{path}: {where} is not a JSON object")
    for key in keys:
        if key not in entry:
            raise AnnotationError(f"{path}: {where} is missing key {key!r}")


class CocoDetection(RawThenTransform):
    """Detection items ``(image, target)`` per docs/CONTRACTS.md from a COCO folder + json.

    Category ids map to contiguous labels ``0..C-1`` in ascending id order. Crowd boxes are
    kept with ``iscrowd=True``; images without annotations are kept. Boxes reaching outside
    their image are clipped (``num_clipped_boxes``); boxes of zero area after clipping are
    dropped (``num_dropped_boxes``).

    ``with_masks=True`` adds a semantic ``mask`` (0 background, label + 1 for a class, 255 for
    crowd regions) rendered from the ``segmentation`` polygons / RLE.
    Without ``transforms`` an item is the raw uint8 image and a target in original pixels.
    """

    def __init__(self, images_dir: str | Path, annotations_json: str | Path,
                 transforms: Transform | None = None, *, class_names: Sequence[str] | None = None,
                 with_masks: bool = False, allow_outside_root: bool = False) -> None:
        self.allow_outside_root = allow_outside_root
        self.images_dir = Path(images_dir)
        self.annotations_json = Path(annotations_json)
        self.transforms = transforms
        self.with_masks = with_masks
        if not self.images_dir.is_dir():
            raise AnnotationError(f"{self.images_dir}: image folder not found "
                                  f"(annotations {self.annotations_json.name})")
        data = read_coco_json(self.annotations_json)
        self._parse_categories(data["categories"], class_names)
        self._parse_images(data["images"])
        self._parse_annotations(data["annotations"])
        if self.num_clipped_boxes or self.num_dropped_boxes:
            message = (f"{self.annotations_json}: clipped {self.num_clipped_boxes} boxes reaching "
                       f"outside their image; dropped {self.num_dropped_boxes} boxes of zero area")
            warnings.warn(message, stacklevel=2)
            log.warning(message)

    # -- construction-time validation -------------------------------------------------------
    def _parse_categories(self, categories: list, class_names: Sequence[str] | None) -> None:
        path = self.annotations_json
        for i, cat in enumerate(categories):
            _require(cat, ("id",), f"category #{i}", path)
        ids = [int(cat["id"]) for cat in categories]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise AnnotationError(f"{path}: duplicate category ids {dup}")
        if not ids:
            raise AnnotationError(f"{path}: 'categories' is empty")
        by_id = {int(cat["id"]): cat for cat in categories}
        self.label_to_category_id: list[int] = sorted(ids)
        self.category_id_to_label: dict[int, int] = {
            cid: label for label, cid in enumerate(self.label_to_category_id)}
        if class_names is not None:
            if len(class_names) != len(ids):
                raise AnnotationError(f"{path}: {len(ids)} categories but {len(class_names)} "
                                      "class_names were given")
            self.class_names = list(class_names)
        else:
            self.class_names = [str(by_id[cid].get("name", cid)) for cid in self.label_to_category_id]

    def _parse_images(self, images: list) -> None:
        path = self.annotations_json
        self.image_ids: list[int] = []
        self.file_names: list[str] = []
        self.sizes: list[tuple[int, int]] = []
        for i, img in enumerate(images):
            where = f"image #{i}" + (f" (id {img['id']})" if isinstance(img, dict) and "id" in img else "")
            _require(img, ("id", "file_name", "width", "height"), where, path)
            width, height = img["width"], img["height"]
            if not (isinstance(width, (int, float)) and isinstance(height, (int, float))
                    and width > 0 and height > 0):
                raise AnnotationError(f"{path}: {where} has invalid size {width}x{height}")
            self.image_ids.append(int(img["id"]))
            self.file_names.append(contained_name(str(img["file_name"]), f"{path}: {where} file_name",
                                                  self.allow_outside_root))
            self.sizes.append((int(height), int(width)))
        self._index_of_id = {image_id: k for k, image_id in enumerate(self.image_ids)}
        if len(self._index_of_id) != len(self.image_ids):
            dup = sorted({i for i in self.image_ids if self.image_ids.count(i) > 1})[:5]
            raise AnnotationError(f"{path}: duplicate image ids {dup}")

    def _parse_annotations(self, annotations: list) -> None:
        path = self.annotations_json
        per_image: list[list[tuple]] = [[] for _ in self.image_ids]
        self.num_clipped_boxes = 0
        self.num_dropped_boxes = 0
        for i, ann in enumerate(annotations):
            ann_name = f"annotation id {ann['id']}" if isinstance(ann, dict) and "id" in ann \
                else f"annotation #{i}"
            _require(ann, ("image_id", "category_id", "bbox"), ann_name, path)
            image_index = self._index_of_id.get(ann["image_id"])
            if image_index is None:
                raise AnnotationError(f"{path}: {ann_name} refers to unknown image id {ann['image_id']}")
            where = f"{ann_name} (image id {ann['image_id']}, {self.file_names[image_index]})"
            label = self.category_id_to_label.get(ann["category_id"])
            if label is None:
                raise AnnotationError(f"{path}: {where} has unknown category id {ann['category_id']!r}")
            bbox = ann["bbox"]
            if not (isinstance(bbox, list) and len(bbox) == 4
                    and all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)):
                raise AnnotationError(f"{path}: {where} has invalid bbox {bbox!r} "
                                      "(expected [x, y, width, height])")
            x, y, w, h = (float(v) for v in bbox)
            if w < 0 or h < 0:
                raise AnnotationError(f"{path}: {where} has negative box size "
                                      f"(width {w:g}, height {h:g})")
            img_h, img_w = self.sizes[image_index]
            x1, y1 = min(max(x, 0.0), img_w), min(max(y, 0.0), img_h)
            x2, y2 = min(max(x + w, 0.0), img_w), min(max(y + h, 0.0), img_h)
            if (x1, y1, x2, y2) != (x, y, x + w, y + h):
                self.num_clipped_boxes += 1
            if x2 <= x1 or y2 <= y1:
                self.num_dropped_boxes += 1
                continue
            segm = ann.get("segmentation") if self.with_masks else None
            per_image[image_index].append(((x1, y1, x2, y2), label, bool(ann.get("iscrowd", 0)), segm))
        # Compact numpy arrays per image keep worker memory small and indexing cheap.
        self._boxes = [np.array([a[0] for a in anns], np.float32).reshape(-1, 4) for anns in per_image]
        self._labels = [np.array([a[1] for a in anns], np.int64) for anns in per_image]
        self._iscrowd = [np.array([a[2] for a in anns], bool) for anns in per_image]
        self._segms = [[a[3] for a in anns] for anns in per_image] if self.with_masks else None

    # -- items ------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.label_to_category_id)

    def __len__(self) -> int:
        return len(self.image_ids)

    def image_path(self, index: int) -> Path:
        return self.images_dir / self.file_names[index]

    def annotations(self, index: int) -> dict[str, torch.Tensor]:
        """Boxes (xyxy, original pixels), labels and crowd flags of an item, without decoding it."""
        return {"boxes": torch.from_numpy(self._boxes[index].copy()),
                "labels": torch.from_numpy(self._labels[index].copy()),
                "iscrowd": torch.from_numpy(self._iscrowd[index].copy())}

    def load_raw(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """``(uint8 [3,H,W] image, target in original pixels)`` with ``scale == (1.0, 1.0)``."""
        path = self.image_path(index)
        image = load_image(path)
        height, width = image.shape[-2:]
        if (height, width) != self.sizes[index]:
            json_h, json_w = self.sizes[index]
            raise ImageError(f"{path}: decoded size {height}x{width} (HxW, after EXIF rotation) "
                             f"differs from {json_h}x{json_w} in {self.annotations_json.name}")
        target: dict[str, Any] = {
            **self.annotations(index),
            "image_id": self.image_ids[index],
            "file_name": self.file_names[index],
            "orig_size": (int(height), int(width)),
            "scale": (1.0, 1.0),
        }
        if self.with_masks:
            target["mask"] = self._semantic_mask(index, height, width)
        return image, target

    def _semantic_mask(self, index: int, height: int, width: int) -> torch.Tensor:
        from faster_coco_eval.core import mask as mask_utils

        mask = np.zeros((height, width), np.uint8)
        boxes, labels, crowd = self._boxes[index], self._labels[index], self._iscrowd[index]
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        # Large objects first, so small ones lying on top of them stay visible.
        for k in np.argsort(-areas, kind="stable"):
            segm = self._segms[index][k]
            value = 255 if crowd[k] else int(labels[k]) + 1
            if not segm:
                x1, y1, x2, y2 = boxes[k]
                mask[int(y1):int(math.ceil(y2)), int(x1):int(math.ceil(x2))] = 255
                continue
            rle = mask_utils.segmToRle(segm, width, height)
            mask[mask_utils.decode(rle).astype(bool)] = value
        return torch.from_numpy(mask.astype(np.int64))

    def __repr__(self) -> str:
        return (f"CocoDetection({self.images_dir}, {self.annotations_json.name}: {len(self)} images, "
                f"{self.num_classes} classes, {sum(len(b) for b in self._boxes)} boxes)")
