"""What every scaledet detector declares and offers on top of its pure ``forward``
(the whole contract: docs/CONTRACTS.md, "Detectors")."""
from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from scaledet.data.input_spec import IMAGENET_MEAN, IMAGENET_STD, InputSpec
from scaledet.data.prediction import predict_batches
from scaledet.models.common import FeatureInfo
from scaledet.ops.criterion import Criterion

__all__ = ["Detector", "IMAGENET_MEAN", "IMAGENET_STD"]


class Detector(nn.Module):
    """Base class of the detectors.

    Subclasses pass their input spec, ``num_classes``, ``criterion`` and ``postprocessor`` to
    ``super().__init__`` and define ``forward`` (raw head tensors), :meth:`loss`,
    :meth:`postprocess`, :meth:`num_anchors` and ``feature_info``.

    Attributes every detector has:

    - ``input_spec`` (:class:`~scaledet.data.input_spec.InputSpec`): how images become input;
      ``pixel_mean``, ``pixel_std``, ``size_divisor`` and ``default_image_size`` read it;
    - ``num_classes``; ``has_mask`` (class attribute: ``postprocess`` also returns ``mask``);
    - ``tasks``: what the model was built to do and is evaluated on, ``("det",)`` or with
      ``"seg"`` when it has a mask (BlitzNet may be built for ``("seg",)`` alone);
    - ``model_name``: the registered name (``create_model`` sets it; else the class name);
    - ``class_names`` and ``label_to_category_id`` (label -> data set category id, e.g. COCO):
      ``None`` until set; checkpoints store both;
    - ``criterion`` (the loss module, ``None`` if the model cannot be trained) and
      ``postprocessor`` (with settable ``score_threshold`` and ``max_detections``; ``None`` if
      ``postprocess`` does its own).
    """

    has_mask: bool = False
    # predict runs an eval-mode model through a cached BN-folded (channels-last on CPU) copy
    fuse_for_predict: bool = True
    num_classes: int

    @property
    def tasks(self) -> tuple[str, ...]:
        return ("det", "seg") if self.has_mask else ("det",)

    def __init__(self, input_spec: InputSpec | None = None, *, num_classes: int | None = None,
                 criterion: Criterion | None = None, postprocessor: nn.Module | None = None,
                 class_names: list[str] | None = None):
        super().__init__()
        self.input_spec: InputSpec = input_spec or InputSpec(image_size=512)
        if num_classes is not None:
            self.num_classes = num_classes
        self.criterion = criterion
        self.postprocessor = postprocessor
        self.model_name: str = type(self).__name__
        self.class_names = class_names
        self.label_to_category_id: list[int] | None = None

    # ------------------------------------------------------------------ input spec, read-only views
    @property
    def pixel_mean(self) -> tuple[float, float, float]:
        return self.input_spec.pixel_mean

    @property
    def pixel_std(self) -> tuple[float, float, float]:
        return self.input_spec.pixel_std

    @property
    def size_divisor(self) -> int:
        return self.input_spec.size_divisor

    @property
    def default_image_size(self) -> int:
        return self.input_spec.image_size

    # ------------------------------------------------------------------ what subclasses define
    def loss(self, outputs: dict, targets: list[dict], image_sizes=None) -> dict[str, torch.Tensor]:
        """Losses of ``forward``'s outputs in fp32; key ``loss`` is the total."""
        raise TypeError(_undefined(self, "loss"))

    def postprocess(self, outputs: dict, image_sizes) -> dict[str, torch.Tensor]:
        """Fixed-size detections: ``boxes [B,K,4]``, ``scores [B,K]``, ``labels [B,K]`` (-1 in
        empty slots), ``num_detections [B]`` and, when ``has_mask``, ``mask [B,H,W]``."""
        raise TypeError(_undefined(self, "postprocess"))

    @property
    def feature_info(self) -> list[FeatureInfo]:
        """The feature maps the heads see, ``(channels, stride)`` each, finest first."""
        raise TypeError(_undefined(self, "feature_info"))

    def num_anchors(self, height: int, width: int) -> int:
        """How many anchors (default boxes) the outputs hold for one ``height x width`` input."""
        raise TypeError(_undefined(self, "num_anchors"))

    # ------------------------------------------------------------------ shared behaviour
    def distribute_loss_normalizer(self, sum_over_processes: Callable[[torch.Tensor], torch.Tensor] | None,
                                   num_processes: int) -> None:
        """Under DDP: normalise the loss by counts summed over all processes' batches
        (``sum_over_processes`` is an all-reduce sum); ``None`` restores the one-process loss."""
        if self.criterion is not None:
            self.criterion.distribute_normalizer(sum_over_processes, num_processes)

    @staticmethod
    def image_sizes_tensor(image_sizes, images: torch.Tensor) -> torch.Tensor:
        if image_sizes is None:
            return torch.tensor([images.shape[-2:]] * images.shape[0], device=images.device)
        if isinstance(image_sizes, torch.Tensor):
            return image_sizes.to(images.device)
        return torch.tensor([list(s) for s in image_sizes], device=images.device)

    def optimized_for_inference(self, *, fuse_bn: bool = True, channels_last: bool = True,
                                precision: str = "fp32", winograd: bool = True) -> "Detector":
        """An eval-mode copy for deployment: BatchNorm folded into convolutions (shared heads with
        per-level BN are un-shared into one folded conv per level) and channels-last memory,
        which the CPU convolution kernels prefer. ``winograd``: in fp32 on CPU, wide 3x3
        convolutions run by Winograd F(4x4, 3x3), the same result up to fp32 rounding with a quarter
        of the multiply-adds (``scaledet.ops.winograd``). ``precision="bf16"`` casts the network to
        bfloat16 instead (fp32 in and out; fast on CPUs with AMX / AVX-512 BF16, see
        ``scaledet.export.precision``). The original model is left as it is."""
        from scaledet.export.fuse import fuse_conv_bn
        from scaledet.export.precision import cast_for_inference, precision_dtype
        from scaledet.ops.winograd import use_winograd

        precision_dtype(precision)  # a bad name fails before the copy is made
        model = fuse_conv_bn(self) if fuse_bn else copy.deepcopy(self).eval()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        if winograd and precision == "fp32":
            use_winograd(model)
        model = cast_for_inference(model, precision)
        model.fuse_for_predict = False  # already what predict's cached copy would be
        return model

    def inference_network(self, precision: str = "fp32") -> nn.Module:
        """The network ``predict`` runs. For an eval-mode model (and ``fuse_for_predict``): a copy
        with BatchNorm folded into the convolutions, in channels-last memory on CPU (where the
        convolution kernels prefer it), made on first use and remade whenever a parameter or
        buffer changes (see ``scaledet.export.fuse.weights_fingerprint``). It costs one more set of
        weights in memory. A training-mode model (whose weights are about to change) runs as it is.
        ``precision="bf16"``: that copy in bfloat16 (``optimized_for_inference``), even when
        ``fuse_for_predict`` is off."""
        from scaledet.export.fuse import cached_inference_copy
        from scaledet.export.precision import precision_dtype

        if precision_dtype(precision) == torch.float32 and (self.training or not self.fuse_for_predict):
            return self
        param = next(self.parameters(), None)
        return cached_inference_copy(self, channels_last=param is not None and param.device.type == "cpu",
                                     fuse_bn=self.fuse_for_predict, precision=precision)

    @torch.inference_mode()
    def predict(self, images: Any | Sequence[Any], *, score_threshold: float | None = None,
                image_size: int | None = None, batch_size: int = 8,
                precision: str = "fp32") -> list[dict[str, torch.Tensor]]:
        """Detect objects in paths, PIL images, numpy arrays or tensors; boxes in original pixels.
        ``precision="bf16"`` runs a bfloat16 copy of the network (see ``optimized_for_inference``)."""
        device = next(self.parameters()).device
        network = self.inference_network(precision)
        was_training = self.training
        self.eval()

        def run(images: torch.Tensor, image_sizes: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
            return self.postprocess(network(images.to(device)), image_sizes)

        try:
            return predict_batches(run, self.input_spec.with_image_size(image_size), images,
                                   batch_size=batch_size, score_threshold=score_threshold)
        finally:
            self.train(was_training)


def _undefined(model: nn.Module, method: str) -> str:
    return f"{type(model).__name__} does not define {method}(), which every Detector must (docs/CONTRACTS.md)"
