"""Model complexity: parameter count and multiply-adds of one forward pass.

Multiply-adds come from ``torch.utils.flop_counter.FlopCounterMode`` (which counts matmuls and
convolutions, 2 FLOPs per multiply-add); MACs = FLOPs / 2, the unit papers call "FLOPs".
Counting can run on the ``meta`` device: parameters and buffers are swapped for shape-only
stand-ins through ``torch.func.functional_call``, so even SpineNet-190 at 1280 px costs no
memory and the caller's model is not modified.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (BN running statistics are buffers and are not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _as_hw(image_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


def count_macs(model: nn.Module, image_size: int | tuple[int, int], batch: int = 1,
               device: str | torch.device = "meta", in_channels: int = 3) -> int:
    """Multiply-adds of ``model(x)`` for an input ``[batch, in_channels, H, W]`` in eval mode."""
    h, w = _as_hw(image_size)
    device = torch.device(device)
    state: dict[str, torch.Tensor] = {}
    if device.type == "meta":
        state = {name: torch.empty_like(t, device="meta")
                 for name, t in [*model.named_parameters(), *model.named_buffers()]}
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(batch, in_channels, h, w, device=device)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            if state:
                functional_call(model, state, (x,), tie_weights=True, strict=False)
            else:
                model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2
