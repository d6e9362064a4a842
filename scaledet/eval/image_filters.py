"""Which images an evaluation scores (for ``eval.image_filter``).

``annotated_non_crowd`` is the MindSpore NAS-FPN port's evaluation set: its eval MindRecord
keeps only images with at least one annotation of a class it knows and no crowd annotation of
any class, and its COCOeval scores only those images, so its 41.7 AP is a number on that subset
of val2017 (docs/reference/MINDSPORE_FORMATS.md §3).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from scaledet.data.coco import read_coco_json
from scaledet.errors import UsageError

__all__ = ["IMAGE_FILTERS", "annotated_non_crowd_image_ids", "filtered_image_ids"]

IMAGE_FILTERS = ("all", "annotated_non_crowd")


def annotated_non_crowd_image_ids(annotations: str | Path | dict[str, Any],
                                  class_names: Sequence[str] | None = None) -> list[int]:
    """Ids (in file order) of the images with >= 1 annotation whose category name is in
    ``class_names`` (every category when None) and no ``iscrowd`` annotation of any category."""
    data = annotations if isinstance(annotations, dict) else read_coco_json(annotations)
    names = {cat["id"]: cat.get("name") for cat in data["categories"]}
    wanted = None if class_names is None else set(class_names)
    counted: dict[int, int] = {}
    crowded: set[int] = set()
    for ann in data["annotations"]:
        image_id = ann["image_id"]
        if ann.get("iscrowd", 0):
            crowded.add(image_id)
        if wanted is None or names.get(ann["category_id"]) in wanted:
            counted[image_id] = counted.get(image_id, 0) + 1
    return [img["id"] for img in data["images"] if counted.get(img["id"]) and img["id"] not in crowded]


def filtered_image_ids(name: str, annotations: str | Path | dict[str, Any]) -> list[int] | None:
    """The image ids filter ``name`` keeps; None for ``"all"`` (no filtering)."""
    if name not in IMAGE_FILTERS:
        raise UsageError(f"unknown image filter {name!r}; allowed: {', '.join(IMAGE_FILTERS)}")
    return None if name == "all" else annotated_non_crowd_image_ids(annotations)
