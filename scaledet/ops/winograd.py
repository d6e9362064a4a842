"""Winograd F(4x4, 3x3) convolution for fp32 on CPU (Lavin & Gray, arXiv 1509.09308).

A 3x3, stride-1 convolution computed tile by tile in a transformed domain: each 6x6 input tile
and each 3x3 kernel are mapped to 36 points, where the convolution becomes 36 independent
``[tiles x C_in] @ [C_in x C_out]`` matrix products, then each 4x4 output tile is mapped back.
The products take 36 multiply-adds per 16 outputs instead of 9 * 16 = 144: a quarter of the
direct algorithm's. The result is the same convolution in exact arithmetic; in fp32 it differs
from the direct one by rounding, about 1e-5 of the output's magnitude per layer
(docs/reference/WINOGRAD.md has the measured figures, docs/PERFORMANCE.md the speed).

Written by hand because no maintained library gives PyTorch this on CPU: PyTorch's CPU
convolution (oneDNN through ideep) runs oneDNN's direct algorithm and offers no switch for
another, and its NNPACK Winograd path fails at run time on the AVX-512 machine we measure on.
GPUs are left to cuDNN, which chooses its own algorithms. Everything here is ordinary tensor
operations; the transforms are small matrix products, so the work stays in BLAS.

Only fp32 and fp64 (the transforms' constants lose too much in bf16/fp16) take this path;
:class:`WinogradConv2d` falls back to the direct convolution for anything else, for small maps
where the tiles do not pay, under autocast, and while tracing or compiling (ONNX export, TorchScript,
``torch.compile``: those back-ends choose their own convolution algorithms).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from scaledet.utils.modules import replace_modules

# F(4x4, 3x3) with interpolation points 0, +-1, +-2 and infinity (Lavin & Gray, docs/reference/WINOGRAD.md §2).
_INPUT_T = ((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0),
            (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1))           # B^T, 6 x 6
_KERNEL = ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6),
           (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0, 0, 1))                 # G, 6 x 3
_OUTPUT_T = ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))  # A^T, 4 x 6

TILE, WINDOW = 4, 6  # outputs per tile side; input tile side (TILE + 3 - 1)
_FAST_DTYPES = (torch.float32, torch.float64)
_constants: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def _transforms(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input 36x36, output 16x36, kernel 6x3) matrices; the 2-D transforms of a flattened tile
    are Kronecker products of the 1-D ones, so each is one matrix product."""
    key = (dtype, device)
    if key not in _constants:
        b_t = torch.tensor(_INPUT_T, dtype=torch.float64)
        a_t = torch.tensor(_OUTPUT_T, dtype=torch.float64)
        g = torch.tensor(_KERNEL, dtype=torch.float64)
        _constants[key] = tuple(m.to(dtype=dtype, device=device)
                                for m in (torch.kron(b_t, b_t), torch.kron(a_t, a_t), g))
    return _constants[key]


def transform_weight(weight: torch.Tensor) -> torch.Tensor:
    """``[C_out, C_in, 3, 3]`` -> ``[36, C_in, C_out]``: G w G^T for every kernel (differentiable)."""
    _, _, g = _transforms(weight.dtype, weight.device)
    c_out, c_in = weight.shape[:2]
    return torch.einsum("il,oklm,nm->inko", g, weight, g).reshape(WINDOW * WINDOW, c_in, c_out)


def _tile_grid(height: int, width: int) -> tuple[int, int]:
    return -(-height // TILE), -(-width // TILE)


def _transform_input(x: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` -> ``[36, tiles, C]``: B^T d B for every overlapping 6x6 tile (zero padding 1)."""
    n, c, h, w = x.shape
    rows, cols = _tile_grid(h, w)
    padded = F.pad(x, (1, TILE * cols + 1 - w, 1, TILE * rows + 1 - h))
    tiles = padded.unfold(2, WINDOW, TILE).unfold(3, WINDOW, TILE)            # N, C, rows, cols, 6, 6
    flat = tiles.permute(4, 5, 0, 2, 3, 1).reshape(WINDOW * WINDOW, n * rows * cols * c)
    input_t, _, _ = _transforms(x.dtype, x.device)
    return (input_t @ flat).view(WINDOW * WINDOW, n * rows * cols, c)


def _transform_output(products: torch.Tensor, shape: tuple[int, int, int], bias: torch.Tensor | None
                      ) -> torch.Tensor:
    """``[36, tiles, C_out]`` -> ``[N, C_out, H, W]`` (channels-last memory): A^T m A per tile."""
    n, h, w = shape
    rows, cols = _tile_grid(h, w)
    c_out = products.shape[-1]
    _, output_t, _ = _transforms(products.dtype, products.device)
    out = (output_t @ products.view(WINDOW * WINDOW, -1)).view(TILE * TILE, n * rows * cols, c_out)
    if bias is not None:
        out += bias
    out = out.view(TILE, TILE, n, rows, cols, c_out).permute(2, 3, 0, 4, 1, 5)
    # a fresh tensor, not a view of the tiles: autograd forbids in-place ops (ReLU) on views
    # made inside a custom Function
    result = torch.empty((n, c_out, h, w), dtype=out.dtype, device=out.device, memory_format=torch.channels_last)
    pixels = result.permute(0, 2, 3, 1)
    if rows * TILE == h and cols * TILE == w:
        pixels.view(n, rows, TILE, cols, TILE, c_out).copy_(out)
    else:
        pixels.copy_(out.reshape(n, rows * TILE, cols * TILE, c_out)[:, :h, :w])
    return result


def _tiles_of_output_grad(grad: torch.Tensor) -> torch.Tensor:
    """``[N, C_out, H, W]`` -> ``[16, tiles, C_out]``, the layout ``_transform_output`` reads from."""
    n, c, h, w = grad.shape
    rows, cols = _tile_grid(h, w)
    padded = F.pad(grad, (0, TILE * cols - w, 0, TILE * rows - h))
    tiles = padded.view(n, c, rows, TILE, cols, TILE).permute(3, 5, 0, 2, 4, 1)
    return tiles.reshape(TILE * TILE, n * rows * cols, c)


def _forward(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    products = torch.bmm(_transform_input(x), u)
    return _transform_output(products, (x.shape[0], x.shape[2], x.shape[3]), bias)


class _WinogradConv3x3(torch.autograd.Function):
    """Backward in the same domain (the autograd of the tiling ops spends most of its time
    scattering overlapping tiles back): the input gradient is itself a 3x3 stride-1 convolution
    (of the output gradient with the flipped, transposed kernel), and the kernel gradient is the
    transposed product of the 36 matrix products."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        u = transform_weight(weight)
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _forward(x, u, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _forward(grad, transform_weight(weight.transpose(0, 1).flip(2, 3)), None)
        if ctx.needs_input_grad[1]:
            _, output_t, g = _transforms(grad.dtype, grad.device)
            tiles = _tiles_of_output_grad(grad)
            grad_products = (output_t.t() @ tiles.view(TILE * TILE, -1)).view(WINDOW * WINDOW, tiles.shape[1], -1)
            grad_u = torch.bmm(_transform_input(x).transpose(1, 2), grad_products)      # 36, C_in, C_out
            c_in, c_out = grad_u.shape[1:]
            grad_w = torch.einsum("ij,inko,nm->okjm", g, grad_u.view(WINDOW, WINDOW, c_in, c_out), g)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b


def winograd_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` for a 3x3 kernel, by Winograd F(4x4, 3x3).
    Differentiable in all three arguments; the output is in channels-last memory."""
    if weight.shape[-2:] != (3, 3) or x.dim() != 4 or weight.shape[1] != x.shape[1]:
        raise ValueError(f"winograd_conv3x3 needs x [N, C, H, W] and a [C_out, C, 3, 3] kernel, got "
                         f"{tuple(x.shape)} and {tuple(weight.shape)}")
    return _WinogradConv3x3.apply(x, weight, bias)


class WinogradConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (3x3, stride 1, padding 1, no dilation or groups; same parameters and
    state-dict keys) that runs :func:`winograd_conv3x3` where it is faster: fp32/fp64 on CPU,
    outside autocast and ONNX export, on maps of at least ``min_area`` pixels (``min_area_training``
    when gradients are needed). On smaller maps the tiling costs more than the products save:
    ``benchmarks/bench_winograd.py`` measured 20x20 as 0.71x of the direct time in inference and
    10x10 as 1.19x; in training 40x40 as 0.78x and 20x20 as 1.5x (docs/PERFORMANCE.md)."""

    min_area = 400
    min_area_training = 1600

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        check_winograd_shape(self)
        self._frozen_weight: tuple | None = None

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> "WinogradConv2d":
        """The same layer, sharing ``conv``'s parameter objects (optimisers holding them still work)."""
        check_winograd_shape(conv)
        layer = cls(conv.in_channels, conv.out_channels, 3, padding=1, bias=conv.bias is not None,
                    device="meta")
        layer.weight = conv.weight
        layer.bias = conv.bias
        layer.train(conv.training)
        return layer

    def uses_winograd(self, x: torch.Tensor) -> bool:
        """Whether a call on ``x`` runs Winograd, in the current grad mode."""
        if not (x.device.type == "cpu" and x.dtype in _FAST_DTYPES and self.weight.dtype == x.dtype
                and x.dim() == 4 and not torch.is_autocast_enabled("cpu") and not torch.onnx.is_in_onnx_export()
                and not torch.jit.is_scripting() and not torch.jit.is_tracing()
                and not torch.compiler.is_compiling()):
            return False
        # with gradients the kernel gradient lives in the 36-point domain (4x the kernel's size):
        # on small maps writing it costs more than the products save
        min_area = self.min_area_training if self._needs_grad(x) else self.min_area
        return x.shape[-2] * x.shape[-1] >= min_area

    def _needs_grad(self, x: torch.Tensor) -> bool:
        return torch.is_grad_enabled() and (self.weight.requires_grad or x.requires_grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.uses_winograd(x):
            return super().forward(x)
        if self._needs_grad(x):
            return _WinogradConv3x3.apply(x, self.weight, self.bias)
        return _forward(x, self._weight_for_inference(), self.bias)

    def _weight_for_inference(self) -> torch.Tensor:
        """The transformed kernel, kept while the weight is the same tensor at the same version
        (every in-place write bumps it). Holding the weight itself, not its address, means a new
        weight can never be mistaken for the old one."""
        weight = self.weight
        if weight.is_inference():  # keeps no version counter: cannot tell whether it changed
            return transform_weight(weight)
        cached = self._frozen_weight
        if cached is None or cached[0] is not weight or cached[1] != weight._version:
            with torch.no_grad():
                cached = self._frozen_weight = (weight, weight._version, transform_weight(weight).contiguous())
        return cached[2]


def check_winograd_shape(conv: nn.Conv2d) -> None:
    if not winograd_applies(conv):
        raise ValueError(f"WinogradConv2d needs a 3x3, stride-1, padding-1, undilated, ungrouped "
                         f"convolution with zero padding; got {conv}")


def winograd_applies(conv: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros")


def use_winograd(model: nn.Module, *, min_channels: int = 128) -> int:
    """Replace, in place, every plain ``nn.Conv2d`` that Winograd fits and that has at least
    ``min_channels`` input and output channels with a :class:`WinogradConv2d` sharing its
    parameters (so the state dict, checkpoints and optimisers see no change). Returns how many
    were replaced. Call it before wrapping the model in DDP.

    ``min_channels``: thinner layers lose (``benchmarks/bench_winograd.py``: 64 -> 64 channels at
    160 px took 1.28x the direct time, 256 -> 36 at 80 px 1.09x; 128 -> 128 at 80 px 0.73x)."""
    def swap(child: nn.Module) -> nn.Module | None:
        if (type(child) is nn.Conv2d and winograd_applies(child)
                and min(child.in_channels, child.out_channels) >= min_channels):
            return WinogradConv2d.from_conv(child)
        return None

    return replace_modules(model, swap)
