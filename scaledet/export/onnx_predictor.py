"""Run an exported scaledet ONNX file with ONNX Runtime behind ``Detector.predict``'s API.

The file carries its own pre-processing facts (the model's :class:`InputSpec` and the other
``scaledet.*`` metadata written by :func:`scaledet.export.onnx.export_onnx`), so nothing but the
``.onnx`` is needed. Images go through the same :func:`scaledet.data.prediction.predict_batches`
as ``Detector.predict``; the only difference is that every batch is padded to the exported
(fixed) input size.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from scaledet.data.input_spec import InputSpec
from scaledet.data.prediction import predict_batches
from scaledet.errors import DataError, MissingFileError, UsageError
from scaledet.export.onnx import ort_session, read_metadata

REQUIRED_METADATA = ("image_size", "pixel_mean", "pixel_std", "size_divisor", "num_classes")


class OnnxPredictor:
    """``predict(images, score_threshold=, image_size=, batch_size=)`` on an exported model.

    ``threads``: ONNX Runtime intra-op threads (default: as many as torch uses)."""

    def __init__(self, path: str | Path, providers: Sequence[str] | None = None, threads: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise MissingFileError(f"{self.path}: ONNX model not found")
        try:
            self.session = ort_session(self.path, providers, threads)
        except Exception as err:  # noqa: BLE001 - ORT raises its own exception types
            raise DataError(f"{self.path}: ONNX Runtime cannot load it ({str(err).splitlines()[0]})") from err
        meta = read_metadata(self.session.get_modelmeta().custom_metadata_map)
        missing = [key for key in REQUIRED_METADATA if key not in meta]
        if missing:
            raise DataError(f"{self.path}: not a scaledet export (metadata lacks {', '.join(missing)}); "
                             f"write it with `scaledet export`")
        self.metadata = meta
        self.model_name: str = meta.get("model_name", self.path.stem)
        self.class_names: list[str] | None = meta.get("class_names")
        self.label_to_category_id = meta.get("label_to_category_id")
        self.num_classes = int(meta["num_classes"])
        self.input_spec = InputSpec.from_dict(meta, source=str(self.path))
        self.has_mask = bool(meta.get("has_mask", False))
        self.fixed_batch: int | None = meta.get("batch_size")
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_names = [i.name for i in self.session.get_inputs()]

    @property
    def default_image_size(self) -> int:
        return self.input_spec.image_size

    def __repr__(self) -> str:
        batch = self.fixed_batch or "dynamic"
        return f"OnnxPredictor({self.path}, model={self.model_name}, size={self.default_image_size}, batch={batch})"

    def run(self, images: torch.Tensor, image_sizes: torch.Tensor) -> dict[str, torch.Tensor]:
        """The raw graph on a normalised ``[B,3,S,S]`` batch; fixed-size outputs as tensors."""
        feed = {"images": images.numpy(), "image_sizes": image_sizes.numpy()}
        outputs = self.session.run(self.output_names, {name: feed[name] for name in self.input_names})
        return {name: torch.from_numpy(value) for name, value in zip(self.output_names, outputs)}

    @property
    def size_divisor(self) -> int:
        return self.input_spec.size_divisor

    def __call__(self, images: torch.Tensor, image_sizes: Sequence[tuple[int, int]]) -> dict[str, torch.Tensor]:
        """The evaluation loop's predictor interface (``scaledet.engine.evaluate.Predictor``):
        a normalised batch in, the graph's fixed-size detections for those images out, run in
        slices of the exported batch size."""
        size = self.default_image_size
        if images.shape[-2] > size or images.shape[-1] > size:
            raise UsageError(f"{self.path} was exported for {size} px inputs; the data gives "
                             f"{images.shape[-2]}x{images.shape[-1]} (evaluate with the image size it was exported at)")
        step = self.fixed_batch or images.shape[0]
        parts = []
        for start in range(0, images.shape[0], step):
            chunk = images[start:start + step].cpu()
            post = self.run(*self._padded_batch(chunk, list(image_sizes[start:start + step])))
            parts.append({key: value[: chunk.shape[0]] for key, value in post.items()})
        return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}

    def _padded_batch(self, images: torch.Tensor,
                      image_sizes: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        size = self.default_image_size
        batch = self.fixed_batch or images.shape[0]
        full = images.new_zeros((batch, 3, size, size))
        full[: images.shape[0], :, : images.shape[2], : images.shape[3]] = images
        sizes = torch.tensor([list(s) for s in image_sizes] + [[size, size]] * (batch - images.shape[0]),
                             dtype=torch.int64)
        return full, sizes

    def predict(self, images: Any | Sequence[Any], *, score_threshold: float | None = None,
                image_size: int | None = None, batch_size: int = 8) -> list[dict[str, torch.Tensor]]:
        """Detect objects in paths, PIL images, numpy arrays or tensors; boxes in original pixels."""
        if image_size is not None and image_size != self.default_image_size:
            raise UsageError(f"{self.path} was exported for {self.default_image_size} px inputs, not {image_size}; "
                             f"re-export with `scaledet export --image-size {image_size}`")
        return predict_batches(self, self.input_spec, images, batch_size=self.fixed_batch or batch_size,
                               score_threshold=score_threshold)
