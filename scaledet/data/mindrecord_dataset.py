"""Detection items from the MindSpore NAS-FPN port's MindRecord files (its ``create_data.py``).

The port's rows are ``img_id`` (int32 [1]), ``image`` (the JPEG file's bytes) and ``annotation``
(int32 [N, 5]: ``[round(y0), round(x0), round(y1), round(x1), class_index]``, class_index into
the port's 81-name ``coco_classes`` with 0 = background): docs/reference/MINDSPORE_FORMATS.md §3.
Items follow docs/CONTRACTS.md: xyxy boxes in original pixels, labels ``0..C-1`` (the port's
class_index - 1) and COCO category ids found by class name.

What the rows cannot give: crowd flags (the port's training files keep crowd regions as ordinary
boxes and its evaluation files drop images that have any), so ``iscrowd`` is all False; and file
names, so ``file_name`` names the shard and row.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from scaledet.data.base import RawThenTransform
from scaledet.data.mindrecord import MindRecordError, MindRecordReader
from scaledet.data.tfrecord import category_table_from_coco_json, decode_image_bytes
from scaledet.errors import UsageError

__all__ = ["MindRecordDetection", "PORT_COCO_CLASSES", "COCO_CATEGORY_IDS"]

Transform = Callable[[torch.Tensor, dict], tuple[torch.Tensor, dict]]

# The port's default_config.yaml ``coco_classes`` (background first, then COCO's 80 names in
# category-id order) and COCO 2017's category id of each of those 80 names (docs/reference/MINDSPORE_FORMATS.md §3).
PORT_COCO_CLASSES = (
    "background", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse",
    "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie",
    "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon",
    "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut",
    "cake", "chair", "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush")
COCO_CATEGORY_IDS = (*range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70,
                     *range(72, 83), *range(84, 91))


class MindRecordDetection(RawThenTransform):
    """Map-style ``(image, target)`` items from a port MindRecord set.

    ``source``: one shard file (all shards its header lists are read) or a list of shard files.
    ``classes``: the port's class list with background first (default its ``coco_classes``).
    Category ids come from ``label_to_category_id``, else by name from ``categories_json`` (a
    COCO annotation file, e.g. the one the set was made from), else COCO 2017's ids.
    ``index``: ``"db"`` (the SQLite index beside each shard) or ``"pages"`` (walk the headers).
    Like the TFRecord reader the set is indexed once here, so any sampler (the trainer's splits
    rows over ranks and DataLoader workers) can address any row. Boxes are clipped to the image;
    boxes of zero area (possible after the port's rounding to whole pixels) are dropped.
    """

    def __init__(self, source: str | Path | Sequence[str | Path], transforms: Transform | None = None, *,
                 classes: Sequence[str] = PORT_COCO_CLASSES, label_to_category_id: Sequence[int] | None = None,
                 categories_json: str | Path | None = None, index: str = "db") -> None:
        self.reader = MindRecordReader(source, index=index)
        self.transforms = transforms
        missing = sorted({"img_id", "image", "annotation"} - set(self.reader.schema))
        if missing:
            raise MindRecordError(f"{self.reader.headers[0].path}: fields {missing} of the port's schema are missing "
                                  f"(it has {sorted(self.reader.schema)})")
        if len(classes) < 2:
            raise UsageError(f"classes needs background plus at least one class, got {list(classes)}")
        self.class_names = [str(c) for c in classes[1:]]
        self.label_to_category_id = self._category_ids(label_to_category_id, categories_json)

    def _category_ids(self, given: Sequence[int] | None, categories_json: str | Path | None) -> list[int]:
        if given is not None:
            ids = [int(c) for c in given]
            if len(ids) != len(self.class_names):
                raise UsageError(f"{len(ids)} label_to_category_id entries for {len(self.class_names)} classes")
            return ids
        if categories_json is not None:
            ids, names = category_table_from_coco_json(categories_json)
            by_name, source = dict(zip(names, ids)), str(categories_json)
        else:
            by_name, source = dict(zip(PORT_COCO_CLASSES[1:], COCO_CATEGORY_IDS)), "COCO 2017's categories"
        unknown = [n for n in self.class_names if n not in by_name]
        if unknown:
            raise UsageError(f"classes {unknown} are not in {source}; pass label_to_category_id")
        return [by_name[n] for n in self.class_names]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.reader)

    def _row(self, index: int) -> tuple[dict[str, Any], str]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} rows")
        index %= len(self)
        return self.reader.read_row(index), self.reader.location(index)

    def _objects(self, row: dict[str, Any], where: str, height: int, width: int) -> dict[str, torch.Tensor]:
        rows = np.asarray(row["annotation"]).reshape(-1, 5).astype(np.int64)
        class_index = rows[:, 4]
        bad = class_index[(class_index < 1) | (class_index > self.num_classes)]
        if bad.size:
            raise MindRecordError(f"{where}: class index {int(bad[0])} outside 1..{self.num_classes} "
                                  f"(0 is background; {len(self.class_names) + 1} classes given)")
        boxes = rows[:, [1, 0, 3, 2]].astype(np.float32)  # (y0, x0, y1, x1) -> (x0, y0, x1, y1)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return {"boxes": torch.from_numpy(boxes[keep]),
                "labels": torch.from_numpy(class_index[keep] - 1),
                "iscrowd": torch.zeros(int(keep.sum()), dtype=torch.bool)}

    def load_raw(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """``(uint8 [3,H,W] image, target in original pixels)`` with ``scale == (1.0, 1.0)``."""
        row, where = self._row(index)
        image = decode_image_bytes(row["image"], where)
        height, width = (int(s) for s in image.shape[-2:])
        target: dict[str, Any] = {
            **self._objects(row, where, height, width),
            "image_id": int(np.asarray(row["img_id"]).reshape(-1)[0]),
            "file_name": self.reader.row_name(index % len(self)),
            "orig_size": (height, width),
            "scale": (1.0, 1.0),
        }
        return image, target

    def __repr__(self) -> str:
        return (f"MindRecordDetection({self.reader.headers[0].path.name}: {len(self.reader.headers)} shards, "
                f"{len(self)} rows, {self.num_classes} classes)")
