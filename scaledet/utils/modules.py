"""Module-tree surgery shared by the model builders and the inference copies."""
from __future__ import annotations

from typing import Callable

import torch.nn as nn


def replace_modules(model: nn.Module, replacement: Callable[[nn.Module], nn.Module | None]) -> int:
    """Put ``replacement(child)`` in place of every submodule for which it is not ``None`` (in
    place; the module tree is read once before any change, so replacements are not visited).
    Returns how many were replaced."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            new = replacement(child)
            if new is not None:
                setattr(parent, name, new)
                replaced += 1
    return replaced
