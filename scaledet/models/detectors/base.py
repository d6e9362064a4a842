"""What every scaledet detector offers on top of its pure ``forward``."""
from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
import torch.nn as nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Detector(nn.Module):
    """Base class. Subclasses define ``forward`` (raw head tensors), ``loss(outputs, targets,
    image_sizes)`` and ``postprocess(outputs, image_sizes)`` (see docs/CONTRACTS.md); this class
    adds the torchvision-style ``predict``."""

    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_STD
    size_divisor: int = 1
    default_image_size: int = 512
    num_classes: int
    class_names: list[str] | None = None

    @staticmethod
    def image_sizes_tensor(image_sizes, images: torch.Tensor) -> torch.Tensor:
        if image_sizes is None:
            return torch.tensor([images.shape[-2:]] * images.shape[0], device=images.device)
        if isinstance(image_sizes, torch.Tensor):
            return image_sizes.to(images.device)
        return torch.tensor([list(s) for s in image_sizes], device=images.device)

    def optimized_for_inference(self, *, fuse_bn: bool = True, channels_last: bool = True) -> "Detector":
        """An eval-mode copy for deployment: BatchNorm folded into convolutions (shared heads with
        per-level BN are un-shared into one folded conv per level) and channels-last memory,
        which the CPU convolution kernels prefer. The original model is left as it is."""
        from scaledet.export.fuse import fuse_conv_bn

        model = fuse_conv_bn(self) if fuse_bn else copy.deepcopy(self).eval()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    @torch.inference_mode()
    def predict(self, images: Any | Sequence[Any], *, score_threshold: float | None = None,
                image_size: int | None = None, batch_size: int = 8) -> list[dict[str, torch.Tensor]]:
        """Detect objects in paths, PIL images, numpy arrays or tensors; boxes in original pixels."""
        from scaledet.engine.inference import predict_images

        return predict_images(self, images, score_threshold=score_threshold, image_size=image_size,
                              batch_size=batch_size)
