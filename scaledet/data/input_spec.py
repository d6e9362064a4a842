"""How an image becomes a model's network input: one frozen :class:`InputSpec` per model.

Every consumer reads the same spec: the data transforms (training and evaluation), ``predict``,
the ONNX metadata and :class:`~scaledet.export.onnx_predictor.OnnxPredictor`, and checkpoints
record it. A new pre-processing fact is a new field here (with a default that keeps today's
behaviour) plus what it changes in :func:`eval_transform` / the training transforms; storage
(``to_dict``/``from_dict``) follows the fields by itself.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

from scaledet.errors import UsageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# long_side: the long side is resized to image_size, aspect kept (RetinaNet, TPU eval).
# square: the whole image is resized to image_size x image_size (SSD / BlitzNet).
RESIZE_MODES = ("long_side", "square")
# bilinear: torchvision's resize of the uint8 image, then (x - mean) / std.
# tf_legacy: the BlitzNet authors' TF1 test pipeline (square mode only): the image goes to float
# [0, 1] first, TF1's legacy bilinear resize (no half-pixel centres, no antialiasing), then
# x * (1 / std) - mean / std, i.e. x * 255 - mean for the caffe-style spec (docs/reference/BLITZNET.md §1.1).
RESIZE_METHODS = ("bilinear", "tf_legacy")


@dataclass(frozen=True)
class InputSpec:
    """Pre-processing facts of one model.

    ``pixel_mean``/``pixel_std`` are RGB on the [0, 1] scale: the network sees
    ``(rgb / 255 - mean) / std``. Batches are zero-padded at the bottom/right to a multiple of
    ``size_divisor``. ``resize_method`` says whose resize arithmetic is reproduced (see
    ``RESIZE_METHODS``).
    """

    image_size: int
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_STD
    size_divisor: int = 1
    resize_mode: str = "long_side"
    resize_method: str = "bilinear"

    def __post_init__(self) -> None:
        mean, std = tuple(float(v) for v in self.pixel_mean), tuple(float(v) for v in self.pixel_std)
        if len(mean) != 3 or len(std) != 3 or not all(std):
            raise UsageError(f"pixel_mean and pixel_std need 3 values (RGB), std non-zero; got {mean} and {std}")
        for name in ("image_size", "size_divisor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{name} must be a positive integer, got {value!r}")
        if self.resize_mode not in RESIZE_MODES:
            raise UsageError(f"unknown resize_mode {self.resize_mode!r}; allowed: {', '.join(RESIZE_MODES)}")
        if self.resize_method not in RESIZE_METHODS:
            raise UsageError(f"unknown resize_method {self.resize_method!r}; allowed: {', '.join(RESIZE_METHODS)}")
        if self.resize_method == "tf_legacy" and not self.square:
            raise UsageError("resize_method 'tf_legacy' is the BlitzNet test pipeline and needs resize_mode 'square'")
        # frozen: store tuples of floats whatever came in (lists from JSON or YAML)
        object.__setattr__(self, "pixel_mean", mean)
        object.__setattr__(self, "pixel_std", std)

    @property
    def square(self) -> bool:
        return self.resize_mode == "square"

    def with_image_size(self, image_size: int | None) -> "InputSpec":
        """The same pre-processing at another input size (``None`` keeps this one)."""
        return self if image_size is None or image_size == self.image_size else replace(self, image_size=image_size)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values, one key per field (checkpoints, ONNX metadata)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {name: list(v) if isinstance(v, tuple) else v for name, v in values.items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str = "input spec") -> "InputSpec":
        """The spec stored by :meth:`to_dict`. Keys that are not fields are ignored (ONNX metadata
        holds other keys too); a missing field takes its default, as files written before it
        existed meant."""
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in values.items() if k in known})
        except TypeError as err:  # a required field is missing
            raise UsageError(f"{source}: incomplete input spec ({err})") from None


def eval_transform(spec: InputSpec):
    """The evaluation (and prediction) transform a model's spec asks for: ``image, target ->
    normalised image, target in network pixels``."""
    if spec.square:
        from scaledet.data.ssd_transforms import SSDEvalTransform

        return SSDEvalTransform(spec.image_size, spec.pixel_mean, spec.pixel_std, resize_method=spec.resize_method)
    from scaledet.data.transforms import EvalTransform

    return EvalTransform(spec.image_size, spec.pixel_mean, spec.pixel_std)
