"""COCO AP of an exported ONNX file (fp32 or int8) on the validation split a config names.

The ONNX model is run through the project's own evaluation loop
(``scaledet.engine.evaluate.evaluate_coco_dataset``) behind the small model interface that loop
uses, so its detections meet exactly the pre-processing, unpacking and COCO evaluator the
PyTorch checkpoints do; only the network + post-processing runs in ONNX Runtime.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Subset

from scaledet.export.onnx_predictor import OnnxPredictor


class OnnxAsDetector(OnnxPredictor):
    """An ``OnnxPredictor`` that the evaluation loop can call like a model: ``model(images)``
    runs the whole graph (the batch padded to the exported size) and ``postprocess`` hands its
    fixed-size detections on."""

    def eval(self) -> "OnnxAsDetector":
        return self

    def __call__(self, images: torch.Tensor) -> dict:
        self._batch_images = images
        return {}

    def postprocess(self, _outputs: dict, image_sizes) -> dict[str, torch.Tensor]:
        images = self._batch_images
        collated = {"images": images.cpu(), "image_sizes": [tuple(int(v) for v in s) for s in image_sizes]}
        padded, sizes = self._padded_batch(collated)
        post = self.run(padded, sizes)
        return {k: v[: images.shape[0]] for k, v in post.items()}


def evaluate_onnx_coco(onnx_path: str | Path, config: str | Path, *, max_images: int | None = None,
                       threads: int | None = None, progress: bool = False) -> dict[str, float]:
    """COCO metrics (``AP``, ``AP50``, ...) of ``onnx_path`` on ``config``'s validation split."""
    from scaledet.config import load_config
    from scaledet.data.factory import build_datasets
    from scaledet.engine.evaluate import evaluate_coco_dataset

    cfg = load_config(config)
    model = OnnxAsDetector(onnx_path, threads=threads)
    bundle = build_datasets(cfg.data, train=False, val=True)
    if bundle.val_annotations is None:
        raise ValueError(f"{config}: its validation split has no COCO annotations to evaluate against")
    limit = max_images or cfg.eval.max_images
    if limit:
        bundle.val = Subset(bundle.val, range(min(limit, len(bundle.val))))
    bundle.set_transforms(cfg.data, model)
    label_map = model.label_to_category_id or bundle.label_to_category_id
    return evaluate_coco_dataset(model, bundle.val, bundle.val_annotations, label_map,
                                 batch_size=model.fixed_batch or 1, device=torch.device("cpu"), progress=progress)
