"""The shape every scaledet data set shares: decode with ``load_raw``, then apply ``transforms``."""
from __future__ import annotations

from typing import Any

import torch


class RawThenTransform(torch.utils.data.Dataset):
    """Subclasses implement ``load_raw(index) -> (uint8 image, target in original pixels)`` and
    set ``transforms`` (or leave it None for raw items); the trainer swaps transforms later."""

    transforms = None

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image, target = self.load_raw(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
