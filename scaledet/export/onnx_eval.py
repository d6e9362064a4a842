"""Accuracy of an exported ONNX file (fp32 or int8) on the validation split a config names.

The ONNX model goes through the project's one evaluation loop
(``scaledet.engine.evaluate.evaluate_on_config`` / ``evaluate_dataset``) as a predictor
(:class:`~scaledet.export.onnx_predictor.OnnxPredictor`), so its detections meet exactly the
data, pre-processing, unpacking and evaluator the PyTorch checkpoints do; only the network and
post-processing run in ONNX Runtime. The file's stored input spec and label map stand in for
the model's.
"""
from __future__ import annotations

from pathlib import Path

from scaledet.engine.distributed import DistInfo
from scaledet.engine.evaluate import evaluate_on_config
from scaledet.errors import UsageError
from scaledet.eval.base import EvalResult
from scaledet.export.onnx_predictor import OnnxPredictor


def evaluate_onnx(cfg, onnx_path: str | Path, *, results_path: Path | None = None, threads: int | None = None,
                  progress: bool = True, info: DistInfo = DistInfo()) -> EvalResult:
    """Evaluate ``onnx_path`` on the validation split of ``cfg`` (a loaded config); detections
    are written to ``results_path`` when given (COCO)."""
    predictor = OnnxPredictor(onnx_path, threads=threads)
    exported = predictor.metadata.get("score_threshold")
    wanted = cfg.eval.score_threshold
    if wanted is not None and (exported is None or abs(wanted - exported) > 1e-9):
        raise UsageError(f"eval.score_threshold={wanted}: {predictor.path} was exported with score threshold "
                         f"{exported}, which is part of its graph; re-export to change it")
    return evaluate_on_config(cfg, predictor, predictor, results_path=results_path, progress=progress, info=info)


def evaluate_onnx_coco(onnx_path: str | Path, config: str | Path, *, max_images: int | None = None,
                       threads: int | None = None, progress: bool = False) -> dict[str, float]:
    """COCO metrics (``AP``, ``AP50``, ...) of ``onnx_path`` on ``config``'s validation split
    (a packaged config name or a YAML file)."""
    from scaledet.config import load_config

    overrides = [f"eval.max_images={max_images}"] if max_images else []
    return evaluate_onnx(load_config(config, overrides), onnx_path, threads=threads, progress=progress).metrics
