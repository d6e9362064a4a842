"""COCO AP of an exported ONNX file (fp32 or int8) on the validation split a config names.

The ONNX model goes through the project's one evaluation loop
(``scaledet.engine.evaluate.evaluate_dataset``) as a predictor, so its detections meet exactly
the pre-processing, unpacking and evaluator the PyTorch checkpoints do; only the network and
post-processing run in ONNX Runtime.
"""
from __future__ import annotations

from pathlib import Path

from torch.utils.data import Subset

from scaledet.errors import UsageError
from scaledet.export.onnx_predictor import OnnxPredictor


def evaluate_onnx_coco(onnx_path: str | Path, config: str | Path, *, max_images: int | None = None,
                       threads: int | None = None, progress: bool = False) -> dict[str, float]:
    """COCO metrics (``AP``, ``AP50``, ...) of ``onnx_path`` on ``config``'s validation split."""
    from scaledet.config import load_config
    from scaledet.data.factory import build_datasets
    from scaledet.engine.evaluate import build_evaluator, evaluate_dataset

    cfg = load_config(config)
    predictor = OnnxPredictor(onnx_path, threads=threads)
    bundle = build_datasets(cfg.data, train=False, val=True)
    limit = max_images or cfg.eval.max_images
    if limit and bundle.val is not None:
        bundle.val = Subset(bundle.val, range(min(limit, len(bundle.val))))
    bundle.set_transforms(cfg.data, predictor)
    evaluator = build_evaluator(cfg.eval, bundle, label_to_category_id=predictor.label_to_category_id)
    if evaluator is None:
        raise UsageError(f"{config}: its validation split has no ground truth to evaluate against")
    result = evaluate_dataset(predictor, bundle.val, evaluator, batch_size=predictor.fixed_batch or 1,
                              progress=progress)
    return result.metrics
