"""The detector behind the service: a PyTorch checkpoint or an exported ONNX file, one interface.

Both predictors already offer ``predict(images, ...)`` with boxes in original pixels; this module
adds what a service needs on top: loading from the command line's options, a description for
``GET /v1/model``, and running a gathered batch so that every image gets exactly the result
``predict`` gives it alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from scaledet.errors import UsageError

BACKENDS = ("torch", "onnxruntime")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    backend: str
    class_names: list[str]
    input_size: int
    resize_mode: str
    size_divisor: int
    has_mask: bool


class ServedModel:
    """Wraps a predictor (``Detector`` or ``OnnxPredictor``) for batched serving."""

    def __init__(self, predictor: Any, backend: str):
        if backend not in BACKENDS:
            raise UsageError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
        self.predictor = predictor
        self.backend = backend
        # Both predictors declare the same facts (docs/CONTRACTS.md): input spec, names, has_mask.
        names = predictor.class_names
        num_classes = int(predictor.num_classes)
        self.class_names = [str(n) for n in names] if names else [str(i) for i in range(num_classes)]
        spec = predictor.input_spec
        self.input_size = int(spec.image_size)
        self.size_divisor = int(spec.size_divisor)
        self.resize_mode = str(spec.resize_mode)
        self.name = str(predictor.model_name)
        self.has_mask = bool(predictor.has_mask)

    @classmethod
    def load(cls, *, checkpoint: str | None = None, onnx: str | None = None, backend: str | None = None,
             device: str = "auto", optimize: bool = True, precision: str = "fp32") -> "ServedModel":
        """From ``--checkpoint`` (PyTorch) or ``--onnx`` (ONNX Runtime); the backend follows the file."""
        from scaledet.engine.prediction_io import predictor_for

        if (checkpoint is None) == (onnx is None):
            raise UsageError("give exactly one of --checkpoint CKPT or --onnx MODEL.onnx")
        backend = backend or ("onnxruntime" if onnx else "torch")
        if backend == "onnxruntime" and not onnx:
            raise UsageError("--backend onnxruntime runs an exported file: give --onnx MODEL.onnx "
                             "(write one with `scaledet export --checkpoint CKPT --output MODEL.onnx`)")
        if backend == "torch" and not checkpoint:
            raise UsageError(f"--backend torch runs a checkpoint, not {onnx}: give --checkpoint CKPT "
                             "or use --backend onnxruntime")
        predictor = predictor_for(backend, checkpoint=checkpoint, onnx_model=onnx, device=device, optimize=optimize,
                                  precision=precision)
        return cls(predictor, backend)

    def info(self) -> ModelInfo:
        return ModelInfo(self.name, self.backend, list(self.class_names), self.input_size, self.resize_mode,
                         self.size_divisor, self.has_mask)

    def canvas(self, height: int, width: int) -> tuple[int, int]:
        """The padded network input an image of this size gets when ``predict`` sees it alone.

        The evaluation resize puts the long side at ``input_size`` (or makes a square) and
        ``collate`` pads up to a multiple of ``size_divisor``; an exported graph always takes its
        fixed square. Images that share a canvas can share a batch without changing each other's
        result: padding them to a bigger canvas would move the zero border their convolutions see.
        """
        size = self.input_size
        if self.backend == "onnxruntime" or self.resize_mode == "square":
            return size, size
        ratio = size / max(height, width)
        resized = (max(1, int(round(height * ratio))), max(1, int(round(width * ratio))))
        step = max(self.size_divisor, 1)
        return tuple(-(-side // step) * step for side in resized)  # type: ignore[return-value]

    def predict_batch(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """``predict`` on many ``uint8 [3,H,W]`` images: one model run per distinct canvas, results
        in input order, no score filtering beyond the model's own post-processing."""
        groups: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            groups.setdefault(self.canvas(int(image.shape[-2]), int(image.shape[-1])), []).append(index)
        results: list[dict[str, torch.Tensor]] = [{} for _ in images]
        for indices in groups.values():
            outputs = self.predictor.predict([images[i] for i in indices], batch_size=len(indices))
            for index, output in zip(indices, outputs):
                results[index] = output
        return results

    def warm_up(self) -> None:
        """One prediction before the first request, so that allocations happen here."""
        probe = torch.zeros((3, self.input_size, self.input_size), dtype=torch.uint8)
        self.predict_batch([probe])
