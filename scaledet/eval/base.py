"""What every evaluator shares: the result type and the process / evaluate protocol.

An evaluator sees each image once, as ``process(targets, detections)`` with detections in
original pixels, and turns each image into a small picklable record; ``evaluate()`` scores the
records. The evaluation loop (:mod:`scaledet.engine.evaluate`) relies on that split under DDP:
each rank processes its shard, the records of all ranks are gathered to rank 0 in data set order,
and the metrics are computed once there.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class EvalResult:
    """One evaluation: headline ``metrics`` (what ``train.keep_best`` and eval.csv see), the
    ``table`` to print, ``details`` (per-class AP, the AP definition, ...) and the file the
    detections were written to, if any."""

    metrics: dict[str, float]
    table: str
    details: dict[str, Any] = field(default_factory=dict)
    results_path: Path | None = None

    def to_json(self) -> dict[str, Any]:
        """Metrics and details as one JSON-ready object (NaN, e.g. a class without objects, as null).
        Array details (COCO's precision curves, for plots) are left out: a summary, not a dump."""
        details = {key: value for key, value in self.details.items() if not isinstance(value, np.ndarray)}
        return json_safe({**self.metrics, **details})


def json_safe(value: Any) -> Any:
    """``value`` with every NaN float replaced by None, which JSON can hold."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def as_numpy(values: torch.Tensor | np.ndarray | Sequence) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


class Evaluator(ABC):
    """Accumulates one record per image (``image_record``) and scores them (``summarize``).

    ``mask_method``: how the loop makes the label maps (``masks``) this evaluator scores, from
    segmentation outputs (see :func:`scaledet.data.prediction.unpack_detections`)."""

    def __init__(self, mask_method: str = "reference") -> None:
        self.records: list[Any] = []
        self.mask_method = mask_method

    def reset(self) -> None:
        self.records = []

    def process(self, targets: Sequence[Mapping[str, Any]], detections: Sequence[Mapping[str, Any]]) -> None:
        """One batch: data set targets and per-image detections (boxes, scores, labels[, masks])
        in original image pixels."""
        for target, detection in zip(targets, detections, strict=True):
            self.records.append(self.image_record(target, detection))

    def evaluate(self) -> EvalResult:
        return self.summarize(self.records)

    @abstractmethod
    def image_record(self, target: Mapping[str, Any], detection: Mapping[str, Any]) -> Any:
        """What scoring needs of one image; small and picklable (it may travel between ranks)."""

    @abstractmethod
    def summarize(self, records: Sequence[Any]) -> EvalResult:
        """The metrics over ``records``, in data set order."""
