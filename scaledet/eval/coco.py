"""COCO detection metrics (bbox and segm) on top of ``faster_coco_eval``.

``faster_coco_eval`` reproduces pycocotools' ``COCOeval`` numbers exactly; this module only adds
input checking with one-line errors that name the offending file, a plain ``dict`` of the 12
standard statistics, the familiar printed table, and the conversion from detector outputs
(xyxy boxes, contiguous labels) to COCO results (xywh boxes, original category ids), and the
:class:`CocoEvaluator` the evaluation loop drives.
"""
from __future__ import annotations

import copy
import json
import math
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from faster_coco_eval import COCO, COCOeval_faster

from scaledet.errors import DataError, MissingFileError, UsageError
from scaledet.eval.base import EvalResult, Evaluator, as_numpy
from scaledet.eval.metric_names import COCO_STAT_NAMES
from scaledet.utils.atomic import write_json

# (title, IoU range, area range, maxDets) of each statistic, in COCOeval.stats order.
_STAT_LAYOUT = (
    *(("Average Precision (AP)", iou, area, 100)
      for iou, area in (("0.50:0.95", "all"), ("0.50", "all"), ("0.75", "all"),
                        ("0.50:0.95", "small"), ("0.50:0.95", "medium"), ("0.50:0.95", "large"))),
    *(("Average Recall    (AR)", "0.50:0.95", area, max_dets)
      for area, max_dets in (("all", 1), ("all", 10), ("all", 100), ("small", 100), ("medium", 100),
                             ("large", 100))),
)

IOU_TYPES = ("bbox", "segm")


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise MissingFileError(f"{what} file not found: {path}")
    try:
        with path.open("r", encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, "
                         f"column {err.colno})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None


def _load_ground_truth(gt: str | Path | Mapping, iou_type: str) -> tuple[dict, str]:
    if isinstance(gt, Mapping):
        dataset, name = copy.deepcopy(dict(gt)), "ground truth"
    else:
        path = Path(gt)
        dataset, name = _read_json(path, "annotation"), str(path)
    if not isinstance(dataset, dict):
        raise DataError(f"{name}: expected a COCO annotation object, got a JSON "
                         f"{type(dataset).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise DataError(f"{name}: missing the '{key}' list of a COCO annotation file")
    if not dataset["images"]:
        raise DataError(f"{name}: has no images to evaluate")
    image_ids = _unique_ids(dataset["images"], name, "image")
    category_ids = _unique_ids(dataset["categories"], name, "category")
    required = ("id", "image_id", "category_id", "bbox" if iou_type == "bbox" else "segmentation")
    for index, ann in enumerate(dataset["annotations"]):
        missing = [key for key in required if not isinstance(ann, dict) or key not in ann]
        if missing:
            raise DataError(f"{name}: annotation #{index} lacks {', '.join(missing)}")
        where = f"{name}: annotation #{index} (id {ann['id']!r})"
        _check_reference(ann, "image_id", image_ids, where, "image")
        _check_reference(ann, "category_id", category_ids, where, "category")
        if "bbox" in ann:
            _check_box(ann["bbox"], where)
        if "area" in ann and not (_is_number(ann["area"]) and ann["area"] >= 0):
            raise DataError(f"{where}: field 'area' must be a finite number >= 0, got {ann['area']!r}")
        if "area" not in ann and "bbox" in ann:
            # COCOeval's area ranges need an area; the box area is the usual fallback.
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
        ann.setdefault("iscrowd", 0)
    return dataset, name


def _load_results(results: str | Path | Sequence[Mapping], iou_type: str,
                  gt_dataset: dict) -> list[dict]:
    if isinstance(results, (str, Path)):
        path = Path(results)
        loaded, name = _read_json(path, "results"), str(path)
        # A results file may also be a whole COCO dataset whose annotations are detections.
        if isinstance(loaded, dict) and isinstance(loaded.get("annotations"), list):
            loaded = loaded["annotations"]
    else:
        loaded, name = results, "results"
    if not isinstance(loaded, list):
        raise DataError(f"{name}: expected a JSON list of detections, got a JSON "
                         f"{type(loaded).__name__}")
    image_ids = {img["id"] for img in gt_dataset["images"]}
    category_ids = {cat["id"] for cat in gt_dataset["categories"]}
    geometry = "bbox" if iou_type == "bbox" else "segmentation"
    for index, det in enumerate(loaded):
        if isinstance(det, Mapping):
            where = f"{name}: detection #{index}"
            for key in ("image_id", "category_id"):
                if key in det and not _is_integer(det[key]):
                    raise DataError(f"{where}: field '{key}' must be an integer, got {det[key]!r}")
            if "score" in det and not _is_number(det["score"]):
                raise DataError(f"{where}: field 'score' must be a finite number, got {det['score']!r}")
            if "bbox" in det:
                _check_box(det["bbox"], where)
            if geometry == "segmentation" and "segmentation" in det and not (
                    isinstance(det["segmentation"], Mapping) and {"size", "counts"} <= set(det["segmentation"])):
                raise DataError(f"{where}: field 'segmentation' must be an RLE object with size and counts")
    checked = []
    for index, det in enumerate(loaded):
        if not isinstance(det, Mapping):
            raise DataError(f"{name}: detection #{index} is not an object")
        missing = [key for key in ("image_id", "category_id", "score", geometry) if key not in det]
        if missing:
            raise DataError(f"{name}: detection #{index} lacks {', '.join(missing)}")
        if det["image_id"] not in image_ids:
            raise DataError(f"{name}: detection #{index} has image_id {det['image_id']!r}, "
                             "which is not in the ground truth")
        if det["category_id"] not in category_ids:
            raise DataError(f"{name}: detection #{index} has category_id "
                             f"{det['category_id']!r}, which is not a ground-truth category")
        # loadRes adds keys (id, area, ...) in place: keep the caller's dicts untouched.
        checked.append(dict(det))
    return checked


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_box(box: Any, where: str) -> None:
    """``[x, y, w, h]``: four finite numbers, width and height not negative."""
    if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(_is_number(v) for v in box)):
        raise DataError(f"{where}: field 'bbox' must be 4 finite numbers [x, y, w, h], got {box!r}")
    if box[2] < 0 or box[3] < 0:
        raise DataError(f"{where}: field 'bbox' has a negative width or height: {box!r}")


def _unique_ids(entries: list, name: str, what: str) -> set:
    """The ids of the ``images`` / ``categories`` list; a duplicate is the ground truth's fault."""
    seen: dict[Any, int] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or "id" not in entry:
            raise DataError(f"{name}: {what} #{index} has no 'id'")
        if not _is_integer(entry["id"]):
            raise DataError(f"{name}: {what} #{index}: field 'id' must be an integer, got {entry['id']!r}")
        if entry["id"] in seen:
            first = seen[entry["id"]]
            raise DataError(f"{name}: duplicate {what} id {entry['id']} ({what} entries #{first} and #{index}) "
                            f"in the ground truth")
        seen[entry["id"]] = index
    return set(seen)


def _check_reference(ann: Mapping, key: str, known: set, where: str, what: str) -> None:
    if ann[key] not in known:
        raise DataError(f"{where}: field '{key}' is {ann[key]!r}, which is not a {what} of the ground truth")


def _silent(*_args: Any, **_kwargs: Any) -> None:
    return None


def _run_cocoeval(gt: str | Path | Mapping, results: str | Path | Sequence[Mapping], iou_type: str,
                  image_ids: Collection[int] | None = None) -> tuple[COCOeval_faster, dict]:
    if iou_type not in IOU_TYPES:
        raise UsageError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    gt_dataset, _ = _load_ground_truth(gt, iou_type)
    detections = _load_results(results, iou_type, gt_dataset)
    coco_gt = COCO(gt_dataset, print_function=_silent)
    coco_dt = coco_gt.loadRes(detections)
    evaluator = COCOeval_faster(coco_gt, coco_dt, iou_type, print_function=_silent)
    if image_ids is not None:
        evaluator.params.imgIds = sorted(int(i) for i in image_ids)
    evaluator.run()
    return evaluator, gt_dataset


def _stats(evaluator: COCOeval_faster) -> dict[str, float]:
    return {name: float(value) for name, value in zip(COCO_STAT_NAMES, evaluator.stats[:len(COCO_STAT_NAMES)])}


def evaluate_coco(gt: str | Path | Mapping, results: str | Path | Sequence[Mapping],
                  iou_type: str = "bbox", image_ids: Collection[int] | None = None) -> dict[str, float]:
    """The 12 standard COCO statistics over every ground-truth image (``COCOeval`` defaults), or
    over ``image_ids`` only (``params.imgIds``; detections on other images are not scored).

    ``gt`` is an annotation file or dict; ``results`` a results file (a JSON list of
    detections, or a COCO dict whose ``annotations`` are the detections) or such a list.
    Empty results give zeros (and -1 where COCO has nothing to average, e.g. no small objects).
    """
    return _stats(_run_cocoeval(gt, results, iou_type, image_ids)[0])


def precision_details(evaluator: COCOeval_faster, gt_dataset: Mapping) -> dict[str, Any]:
    """What plots need of a COCO evaluation: ``precision [T, R, K]`` (IoU thresholds x recall
    thresholds x categories; area "all", 100 detections; -1 where a category has no objects),
    the thresholds, the category names in K order, and ``per_class_AP`` (-1 averaged out; NaN for
    a category without objects)."""
    params = evaluator.params
    names = {category["id"]: category.get("name", str(category["id"])) for category in gt_dataset["categories"]}
    precision = np.asarray(evaluator.eval["precision"])[:, :, :, params.areaRngLbl.index("all"),
                                                        params.maxDets.index(100)]
    class_names = [names[int(cat_id)] for cat_id in params.catIds]
    per_class = {}
    for k, name in enumerate(class_names):
        valid = precision[:, :, k][precision[:, :, k] > -1]
        per_class[name] = float(valid.mean()) if valid.size else float("nan")
    return {"per_class_AP": per_class, "precision": precision, "iou_thresholds": np.asarray(params.iouThrs),
            "recall_thresholds": np.asarray(params.recThrs), "class_names": class_names}


def format_coco_table(stats: Mapping[str, float]) -> str:
    """The 12-line summary that pycocotools' ``COCOeval.summarize()`` prints."""
    lines = []
    for name, (title, iou, area, max_dets) in zip(COCO_STAT_NAMES, _STAT_LAYOUT):
        lines.append(f" {title} @[ IoU={iou:<9} | area={area:>6s} | maxDets={max_dets:>3d} ]"
                     f" = {stats[name]:0.3f}")
    return "\n".join(lines)


def detections_to_coco_results(image_id: int,
                               boxes_xyxy: torch.Tensor | np.ndarray | Sequence,
                               scores: torch.Tensor | np.ndarray | Sequence,
                               labels: torch.Tensor | np.ndarray | Sequence,
                               label_to_category_id: Sequence[int] | Mapping[int, int]
                               ) -> list[dict]:
    """COCO result entries for one image: xywh boxes in original pixels, original category ids.

    Entries with a negative label (the padding of fixed-size detector outputs) are dropped.
    """
    boxes = as_numpy(boxes_xyxy).astype(np.float64).reshape(-1, 4)
    scores_np = as_numpy(scores).astype(np.float64).reshape(-1)
    labels_np = as_numpy(labels).astype(np.int64).reshape(-1)
    if not len(boxes) == len(scores_np) == len(labels_np):
        raise UsageError(f"boxes ({len(boxes)}), scores ({len(scores_np)}) and labels "
                         f"({len(labels_np)}) differ in length")
    keep = labels_np >= 0
    boxes, scores_np, labels_np = boxes[keep], scores_np[keep], labels_np[keep]
    xywh = boxes.copy()
    xywh[:, 2:] -= boxes[:, :2]
    return [
        {"image_id": int(image_id), "category_id": int(label_to_category_id[int(label)]),
         "bbox": [float(v) for v in box], "score": float(score)}
        for box, score, label in zip(xywh, scores_np, labels_np)
    ]


class CocoEvaluator(Evaluator):
    """COCO box AP/AR of detections against a COCO annotation file (or dict).

    ``label_to_category_id`` maps the model's contiguous labels to the file's category ids. The
    detections of every image are written to ``results_path`` (a COCO results file) when given.
    ``image_ids``: score only these images of the file (``eval.image_filter``).
    """

    def __init__(self, annotations: str | Path | Mapping,
                 label_to_category_id: Sequence[int] | Mapping[int, int],
                 results_path: Path | None = None, image_ids: Collection[int] | None = None) -> None:
        super().__init__()
        self.image_ids = image_ids
        self.annotations = annotations
        self.label_to_category_id = label_to_category_id
        self.results_path = results_path

    def image_record(self, target: Mapping[str, Any], detection: Mapping[str, Any]) -> list[dict]:
        return detections_to_coco_results(target["image_id"], detection["boxes"], detection["scores"],
                                          detection["labels"], self.label_to_category_id)

    def summarize(self, records: Sequence[list[dict]]) -> EvalResult:
        results = [entry for image in records for entry in image]
        if self.results_path is not None:
            write_json(self.results_path, results, indent=None)
        evaluator, gt_dataset = _run_cocoeval(self.annotations, results, "bbox", self.image_ids)
        stats = _stats(evaluator)
        return EvalResult(stats, format_coco_table(stats), details=precision_details(evaluator, gt_dataset),
                          results_path=self.results_path)
