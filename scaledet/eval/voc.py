"""PASCAL VOC detection AP: the 2007 11-point and the VOC2010+ area (all-point) definitions.

Written by hand because none of the installed libraries computes VOC AP. The matching follows
the VOC devkit (``VOCevaldet.m``):

* detections of a class are taken in descending score order (stable sort, so ties keep file order);
* each is compared with the ground-truth box of its image it overlaps most; it is a true positive
  when that IoU is **strictly greater** than the threshold (``ov > thresh`` in the devkit, as in
  py-faster-rcnn's ``voc_eval``) and that box has not been claimed yet; a second detection of the
  same box is a false positive, even when another box would have been free;
* a detection whose best box is ``difficult`` counts neither as TP nor FP, and difficult boxes do
  not count towards recall;
* boxes are continuous coordinates by default (area ``(x2-x1)*(y2-y1)``); ``plus_one=True``
  gives the devkit's inclusive pixel convention (``x2-x1+1``);
* the 11-point thresholds are exactly ``i/10`` (so a recall of exactly 0.3 reaches the 0.3 point,
  which ``np.arange(0, 1.1, 0.1)`` in py-faster-rcnn misses by rounding);
* mAP is the mean over classes with at least one non-difficult object; other classes get NaN.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou

from scaledet.errors import DataError, MissingFileError, UsageError
from scaledet.data.voc_files import VOC_CLASSES, VocGroundTruth, read_class_mask, read_voc_xml
from scaledet.eval.base import EvalResult, Evaluator, as_numpy
from scaledet.eval.miou import ConfusionMatrix

VOC_METRICS = ("11point", "area")


@dataclass
class VocImageAnnotation:
    """One image's objects: ``boxes`` xyxy ``[N,4]``, class ``names`` and ``difficult`` flags."""

    boxes: np.ndarray
    names: list[str]
    difficult: np.ndarray


@dataclass
class VocClassDetections:
    """All detections of one class: parallel ``image_ids``, ``scores [M]`` and ``boxes [M,4]``."""

    image_ids: list[str] = field(default_factory=list)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))


# --------------------------------------------------------------------------------------- readers
def read_voc_annotation(path: str | Path) -> VocImageAnnotation:
    """One VOC XML annotation file, boxes as written (the devkit's convention)."""
    xml = read_voc_xml(path)
    return VocImageAnnotation(np.asarray([obj.box for obj in xml.objects], dtype=np.float64).reshape(-1, 4),
                              [obj.name for obj in xml.objects],
                              np.asarray([obj.difficult for obj in xml.objects], dtype=bool))


def read_voc_annotations(folder: str | Path,
                         image_ids: Iterable[str] | None = None) -> dict[str, VocImageAnnotation]:
    """``{image_id: annotation}`` from ``folder/*.xml`` (or ``folder/Annotations/*.xml``).

    With ``image_ids`` exactly those files are read (a missing one is an error).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"annotation folder not found: {folder}")
    if (folder / "Annotations").is_dir():
        folder = folder / "Annotations"
    if image_ids is None:
        paths = sorted(folder.glob("*.xml"))
        if not paths:
            raise DataError(f"{folder}: no VOC .xml annotation files")
    else:
        paths = [folder / f"{image_id}.xml" for image_id in image_ids]
    return {path.stem: read_voc_annotation(path) for path in paths}


def _detection_file(folder: Path, class_name: str) -> Path | None:
    matches = sorted(folder.glob(f"*_det_*_{class_name}.txt"))
    if len(matches) > 1:
        raise DataError(f"{folder}: several detection files for class {class_name!r}: "
                         + ", ".join(p.name for p in matches))
    return matches[0] if matches else None


def read_voc_detection_file(path: str | Path,
                            known_image_ids: Iterable[str] | None = None) -> VocClassDetections:
    """One devkit submission file: lines ``image_id score xmin ymin xmax ymax``."""
    path = Path(path)
    known = set(known_image_ids) if known_image_ids is not None else None
    image_ids: list[str] = []
    rows: list[list[float]] = []
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MissingFileError(f"detection file not found: {path}") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    for line_number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            if len(fields) != 6:
                raise ValueError
            values = [float(v) for v in fields[1:]]
        except ValueError:
            raise DataError(f"{path}:{line_number}: expected 'image_id score xmin ymin xmax "
                             f"ymax', got {line.strip()!r}") from None
        if not all(math.isfinite(v) for v in values):
            raise DataError(f"{path}:{line_number}: non-finite number in {line.strip()!r}")
        if values[3] < values[1] or values[4] < values[2]:
            raise DataError(f"{path}:{line_number}: box has xmax < xmin or ymax < ymin in {line.strip()!r}")
        if known is not None and fields[0] not in known:
            raise DataError(f"{path}:{line_number}: image {fields[0]!r} is not in the ground "
                             "truth")
        image_ids.append(fields[0])
        rows.append(values)
    table = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
    return VocClassDetections(image_ids, table[:, 0].copy(), table[:, 1:].copy())


def read_voc_detections(folder: str | Path, classes: Sequence[str] = VOC_CLASSES,
                        known_image_ids: Iterable[str] | None = None
                        ) -> dict[str, VocClassDetections]:
    """``{class: detections}`` from devkit files ``<comp>_det_<set>_<class>.txt`` in ``folder``
    (e.g. ``comp4_det_test_car.txt``). A class without a file has no detections."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"results folder not found: {folder}")
    known = set(known_image_ids) if known_image_ids is not None else None
    paths = {class_name: _detection_file(folder, class_name) for class_name in classes}
    if all(path is None for path in paths.values()):
        raise DataError(f"{folder}: no detection files named <comp>_det_<set>_<class>.txt "
                         "(e.g. comp4_det_test_car.txt)")
    found = {class_name: read_voc_detection_file(path, known) if path is not None
             else VocClassDetections() for class_name, path in paths.items()}
    return found


# ------------------------------------------------------------------------------------ evaluation
def voc_ap(recall: np.ndarray, precision: np.ndarray, metric: str = "area") -> float:
    """AP from a precision/recall curve (points in descending score order)."""
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if metric == "11point":
        points = []
        for threshold in np.arange(11) / 10.0:
            reached = precision[recall >= threshold]
            points.append(reached.max() if reached.size else 0.0)
        return float(np.mean(points))
    if metric == "area":
        mrec = np.concatenate(([0.0], recall, [1.0]))
        # Precision envelope: the best precision at this recall or any higher one.
        mpre = np.maximum.accumulate(np.concatenate(([0.0], precision, [0.0]))[::-1])[::-1]
        steps = np.flatnonzero(mrec[1:] != mrec[:-1])
        return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))
    raise UsageError(f"metric must be one of {VOC_METRICS}, got {metric!r}")


def match_class_detections(annotations: Mapping[str, VocImageAnnotation], class_name: str,
                           detections: VocClassDetections, iou_threshold: float = 0.5,
                           plus_one: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
    """``(tp, fp, num_positives)``: boolean flags in descending score order (ignored detections
    on difficult objects dropped) and the number of non-difficult objects of the class."""
    image_ids = sorted(annotations)
    image_index = {image_id: i for i, image_id in enumerate(image_ids)}
    gt_boxes, gt_image, gt_difficult = [], [], []
    for image_id in image_ids:
        ann = annotations[image_id]
        mine = np.array([name == class_name for name in ann.names], dtype=bool)
        gt_boxes.append(ann.boxes[mine])
        gt_difficult.append(ann.difficult[mine])
        gt_image.append(np.full(int(mine.sum()), image_index[image_id]))
    gt_boxes_all = np.concatenate(gt_boxes) if gt_boxes else np.zeros((0, 4))
    gt_image_all = np.concatenate(gt_image) if gt_image else np.zeros(0, dtype=np.int64)
    difficult_all = np.concatenate(gt_difficult) if gt_difficult else np.zeros(0, dtype=bool)
    num_positives = int((~difficult_all).sum())

    unknown = set(detections.image_ids) - image_index.keys()
    if unknown:
        raise DataError(f"class {class_name!r}: detections for images not in the ground truth: "
                         + ", ".join(sorted(unknown)[:5]))
    order = np.argsort(-detections.scores, kind="stable")
    det_image = np.array([image_index[detections.image_ids[i]] for i in order], dtype=np.int64)
    det_boxes = detections.boxes[order]
    offset = 1.0 if plus_one else 0.0

    best_iou = np.zeros(len(order))
    best_gt = np.full(len(order), -1, dtype=np.int64)
    # The inclusive-pixel IoU equals the continuous IoU of boxes grown by one at x2/y2.
    grow = np.array([0.0, 0.0, offset, offset])
    # Group detections by image; ground truth is already stored image by image.
    by_image = np.argsort(det_image, kind="stable")
    images, starts = np.unique(det_image[by_image], return_index=True)
    gt_starts = np.searchsorted(gt_image_all, images, side="left")
    gt_ends = np.searchsorted(gt_image_all, images, side="right")
    for det_rows, gt_start, gt_end in zip(np.split(by_image, starts[1:]), gt_starts, gt_ends):
        if gt_end == gt_start:
            continue
        ious = box_iou(torch.from_numpy(det_boxes[det_rows] + grow),
                       torch.from_numpy(gt_boxes_all[gt_start:gt_end] + grow)).numpy()
        best_iou[det_rows] = ious.max(axis=1)
        best_gt[det_rows] = gt_start + ious.argmax(axis=1)

    hit = best_iou > iou_threshold
    ignored = np.zeros(len(order), dtype=bool)
    ignored[hit] = difficult_all[best_gt[hit]]
    claims = hit & ~ignored
    # The first (highest-scoring) claim of each object wins; later claims are duplicates.
    first_claim = np.zeros(len(order), dtype=bool)
    claim_rows = np.flatnonzero(claims)
    _, first = np.unique(best_gt[claim_rows], return_index=True)
    first_claim[claim_rows[first]] = True
    kept = ~ignored
    tp = first_claim[kept]
    fp = ~first_claim[kept]
    return tp, fp, num_positives


def evaluate_voc(annotations: Mapping[str, VocImageAnnotation],
                 detections: Mapping[str, VocClassDetections],
                 classes: Sequence[str] = VOC_CLASSES, metric: str = "area",
                 iou_threshold: float = 0.5, plus_one: bool = False) -> dict:
    """``{"mAP": float, "per_class": {class: AP or NaN}, "num_positives": {class: int}}``.

    Only ``classes`` are evaluated; objects of other classes are ignored.
    """
    if metric not in VOC_METRICS:
        raise UsageError(f"metric must be one of {VOC_METRICS}, got {metric!r}")
    per_class: dict[str, float] = {}
    positives: dict[str, int] = {}
    for class_name in classes:
        dets = detections.get(class_name, VocClassDetections())
        tp, fp, num_positives = match_class_detections(annotations, class_name, dets,
                                                       iou_threshold, plus_one)
        positives[class_name] = num_positives
        if num_positives == 0:
            per_class[class_name] = float("nan")
            continue
        tp_cum, fp_cum = np.cumsum(tp), np.cumsum(fp)
        recall = tp_cum / num_positives
        precision = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
        per_class[class_name] = voc_ap(recall, precision, metric)
    valid = [ap for ap in per_class.values() if not math.isnan(ap)]
    mean_ap = float(np.mean(valid)) if valid else float("nan")
    return {"mAP": mean_ap, "per_class": per_class, "num_positives": positives}


def format_voc_table(result: Mapping) -> str:
    """Per-class AP lines followed by the mAP, for printing."""
    lines = []
    for class_name, ap in result["per_class"].items():
        shown = "   n/a (no objects)" if math.isnan(ap) else f"{ap:6.4f}"
        lines.append(f"{class_name:>14s}: {shown}")
    lines.append(f"{'mAP':>14s}: {result['mAP']:6.4f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the evaluator
@dataclass
class _VocImageRecord:
    name: str
    annotation: VocImageAnnotation
    labels: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    confusion: torch.Tensor | None  # [C+1, C+1] pixel counts; None without masks


# eval.miou_method: how the predicted label map at the original image size is made.
MIOU_METHODS = {
    "reference": "logits resized bilinearly to the original size, then argmax",
    "fast": "argmax at network size, nearest resize",
}


class VocEvaluator(Evaluator):
    """VOC detection mAP and, for detections that carry ``masks``, segmentation mIoU.

    ``ground_truth(image_id)`` gives an image's original-resolution ground truth (e.g.
    :meth:`scaledet.data.voc.VOCDetection.ground_truth`). mIoU is computed at the original image
    resolution, as the reference protocol does (docs/reference/BLITZNET.md §5): the predicted
    label map arrives resized to it, and the class mask is read from its file at that size.
    Images without a mask add no pixels; with no pixel at all mIoU is NaN.
    ``miou_method``: "reference" (logits resized bilinearly to the original size, then argmax) or
    "fast" (argmax at the network size, label map resized with nearest neighbour); the table and
    the details name it.
    """

    def __init__(self, ground_truth: Callable[[int], VocGroundTruth], class_names: Sequence[str],
                 metric: str = "area", miou_method: str = "reference",
                 tasks: Sequence[str] = ("det", "seg")) -> None:
        if metric not in VOC_METRICS:
            raise ValueError(f"metric must be one of {VOC_METRICS}, got {metric!r}")
        if miou_method not in MIOU_METHODS:
            raise ValueError(f"miou_method must be one of {MIOU_METHODS}, got {miou_method!r}")
        super().__init__(mask_method=miou_method)
        self.tasks = tuple(tasks)  # what is scored: "det" (mAP) and/or "seg" (mIoU, pixel accuracy)
        self.ground_truth = ground_truth
        self.class_names = list(class_names)
        self.metric = metric

    def image_record(self, target: Mapping[str, Any], detection: Mapping[str, Any]) -> _VocImageRecord:
        truth = self.ground_truth(int(target["image_id"]))
        annotation = VocImageAnnotation(boxes=truth.boxes.astype(np.float64),
                                        names=[self.class_names[int(label)] for label in truth.labels],
                                        difficult=truth.difficult.astype(bool))
        confusion = None
        if "seg" in self.tasks and "masks" in detection and truth.mask_path is not None:
            predicted = detection["masks"]
            matrix = ConfusionMatrix(len(self.class_names) + 1)
            matrix.update(predicted, read_class_mask(truth.mask_path, len(self.class_names),
                                                     size=tuple(predicted.shape)))
            confusion = matrix.matrix
        return _VocImageRecord(truth.name, annotation, as_numpy(detection["labels"]),
                               as_numpy(detection["scores"]), as_numpy(detection["boxes"]), confusion)

    def summarize(self, records: Sequence[_VocImageRecord]) -> EvalResult:
        found: dict[str, list[tuple[str, float, np.ndarray]]] = {name: [] for name in self.class_names}
        confusion = ConfusionMatrix(len(self.class_names) + 1)
        for record in records:
            for box, score, label in zip(record.boxes, record.scores, record.labels):
                found[self.class_names[int(label)]].append((record.name, float(score), box))
            if record.confusion is not None:
                confusion.matrix += record.confusion
        detections = {
            name: VocClassDetections(image_ids=[d[0] for d in items], scores=np.array([d[1] for d in items]),
                                     boxes=np.array([d[2] for d in items]).reshape(-1, 4))
            for name, items in found.items()
        }
        annotations = {record.name: record.annotation for record in records}
        metrics, lines, details = {}, [], {}
        if "det" in self.tasks:
            result = evaluate_voc(annotations, detections, classes=self.class_names, metric=self.metric)
            metrics["mAP"] = result["mAP"]
            lines.append(f"mAP  {metrics['mAP']:.4f}  ({self.metric})")
            details.update(metric=self.metric, per_class_AP=result["per_class"])
        if "seg" in self.tasks:
            segmentation = confusion.compute()
            metrics.update(mIoU=segmentation["miou"], pixel_acc=segmentation["pixel_acc"])
            lines.append(f"mIoU {metrics['mIoU']:.4f}  (method: {self.mask_method}; {MIOU_METHODS[self.mask_method]})")
            details["miou_method"] = self.mask_method
        return EvalResult(metrics, "\n".join(lines), details=details)
