"""Reduced-precision inference copies: bf16 weights and activations, fp32 in and out.

On CPUs with AMX or AVX-512 BF16 (Intel Sapphire Rapids and later, AMD Zen 4 and later) oneDNN runs
bf16 convolutions several times faster than fp32 (docs/PERFORMANCE.md has the measured ratio).
The arithmetic is not fp32's: logits move by about 1e-2, so the accuracy cost is measured
(``scaledet eval --precision bf16``) rather than assumed.

A whole-model cast is used rather than ``torch.autocast``: under ``inference_mode`` autocast casts
every weight on every call (its weight cache only holds leaves that require grad), which costs
about a tenth of the bf16 forward at 640 px.
"""
from __future__ import annotations

import warnings
import torch
from torch import nn
from torch.utils._pytree import tree_map

from scaledet.errors import UsageError

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}


def precision_dtype(precision: str) -> torch.dtype:
    if precision not in PRECISIONS:
        raise UsageError(f"unknown inference precision {precision!r}; allowed: {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


def bf16_is_fast(device: torch.device) -> bool:
    """Whether ``device`` has native bf16 arithmetic (CPU: oneDNN's AVX-512 BF16 / AMX check)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def _cast_floats(dtype: torch.dtype):
    def cast(value):
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != dtype:
            return value.to(dtype)
        return value
    return cast


def _inputs_to_model_dtype(module: nn.Module, args, kwargs):
    cast = _cast_floats(module.inference_dtype)
    return tree_map(cast, args), tree_map(cast, kwargs)


def _outputs_to_fp32(module: nn.Module, args, kwargs, output):
    return tree_map(_cast_floats(torch.float32), output)


def cast_for_inference(model: nn.Module, precision: str) -> nn.Module:
    """Cast ``model`` (in place) to ``precision``. Its ``forward`` still takes and returns fp32 tensors
    (hooks cast at the boundary), so the fp32 post-processing and every caller work unchanged."""
    dtype = precision_dtype(precision)
    if dtype == torch.float32:
        return model
    device = next(model.parameters()).device
    if not bf16_is_fast(device):
        warnings.warn(f"inference precision {precision}: this {device.type} has no native bf16 arithmetic "
                      "(CPU: AVX-512 BF16 or AMX), so it will likely be slower than fp32", stacklevel=3)
    model.to(dtype)
    model.inference_dtype = dtype
    model.register_forward_pre_hook(_inputs_to_model_dtype, with_kwargs=True)
    model.register_forward_hook(_outputs_to_fp32, with_kwargs=True)
    return model
