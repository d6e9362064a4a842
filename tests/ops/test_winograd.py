"""Winograd F(4x4, 3x3): the same convolution as the direct one (exactly in fp64, to rounding in
fp32) forward and backward; the module falls back where it should; the swap keeps parameters."""
from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from scaledet.models.common import Conv2dSame
from scaledet.ops.winograd import WinogradConv2d, transform_weight, use_winograd, winograd_conv3x3


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("n, c_in, c_out, h, w", [(2, 5, 7, 9, 13), (1, 3, 4, 8, 8), (3, 6, 2, 4, 5), (1, 4, 4, 1, 1),
                                                  (2, 3, 5, 17, 6)])
@pytest.mark.parametrize("bias", [True, False])
def test_fp64_forward_and_gradients_equal_the_direct_convolution(n, c_in, c_out, h, w, bias):
    g = torch.Generator().manual_seed(h * w + c_in)
    x = torch.randn(n, c_in, h, w, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.randn(c_out, c_in, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(c_out, dtype=torch.float64, generator=g, requires_grad=True) if bias else None
    inputs = (x, weight) + ((b,) if bias else ())
    ours, reference = winograd_conv3x3(x, weight, b), F.conv2d(x, weight, b, padding=1)
    assert ours.shape == reference.shape
    assert _relative(ours, reference) < 1e-12
    grad = torch.randn(reference.shape, dtype=torch.float64, generator=g)
    for mine, theirs in zip(torch.autograd.grad(ours, inputs, grad), torch.autograd.grad(reference, inputs, grad)):
        assert _relative(mine, theirs) < 1e-12


def test_gradcheck():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 6, 7, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(winograd_conv3x3, (x, weight, b))


def test_fp32_differs_from_direct_only_by_rounding():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 128, 22, 26, generator=g).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(128, 128, 3, 3, generator=g) * 0.03
    ours, reference = winograd_conv3x3(x, weight), F.conv2d(x, weight, padding=1)
    assert 0 < _relative(ours, reference) < 1e-4
    assert ours.is_contiguous(memory_format=torch.channels_last)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="3, 3"):
        winograd_conv3x3(torch.zeros(1, 4, 8, 8), torch.zeros(4, 4, 5, 5))
    with pytest.raises(ValueError, match="stride-1"):
        WinogradConv2d.from_conv(nn.Conv2d(4, 4, 3, stride=2, padding=1))


def _layer(c_in=128, c_out=128, seed=0) -> tuple[nn.Conv2d, WinogradConv2d]:
    torch.manual_seed(seed)
    direct = nn.Conv2d(c_in, c_out, 3, padding=1)
    return direct, WinogradConv2d.from_conv(direct)


def test_module_shares_parameters_and_state_dict_keys():
    direct, layer = _layer()
    assert layer.weight is direct.weight and layer.bias is direct.bias
    assert list(layer.state_dict()) == list(direct.state_dict()) == ["weight", "bias"]
    x = torch.randn(1, 128, 20, 20)
    with torch.no_grad():
        assert 0 < _relative(layer(x), direct(x)) < 1e-4


def test_module_falls_back_to_the_direct_kernel_where_winograd_does_not_pay_or_fit():
    direct, layer = _layer()
    big, small = torch.randn(1, 128, 20, 20), torch.randn(1, 128, 19, 20)  # min_area 400
    with torch.no_grad():
        assert not torch.equal(layer(big), direct(big))
        assert torch.equal(layer(small), direct(small))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(layer(big), direct(big))
        layer_bf16 = WinogradConv2d.from_conv(nn.Conv2d(128, 128, 3, padding=1).to(torch.bfloat16))
        assert not layer_bf16.uses_winograd(big.to(torch.bfloat16))
    # with gradients the threshold is min_area_training (40 x 40)
    x = torch.randn(2, 128, 39, 40)
    assert torch.equal(layer(x), direct(x))
    x = torch.randn(2, 128, 40, 40)
    assert not torch.equal(layer(x), direct(x))


def test_onnx_export_and_tracing_see_the_direct_convolution():
    _, layer = _layer(c_in=128, c_out=128)
    x = torch.randn(1, 128, 24, 24)
    with torch.no_grad():
        traced = torch.jit.trace(layer, x, check_trace=False)
    assert "aten::_convolution" in str(traced.graph) and "aten::bmm" not in str(traced.graph)
    buffer = io.BytesIO()
    torch.onnx.export(layer, (x,), buffer, dynamo=False)
    onnx = pytest.importorskip("onnx")
    ops = {node.op_type for node in onnx.load_from_string(buffer.getvalue()).graph.node}
    assert ops == {"Conv"}


def test_transformed_kernel_follows_in_place_weight_updates():
    direct, layer = _layer()
    x = torch.randn(1, 128, 20, 20)
    with torch.inference_mode():
        first = layer(x)
    with torch.no_grad():
        direct.weight.mul_(-2)  # bumps the version counter, as an optimiser step does
    with torch.inference_mode():
        second = layer(x)
        assert _relative(second, direct(x)) < 1e-4
    assert _relative(second, first) > 0.5


def test_transform_weight_layout():
    weight = torch.zeros(2, 3, 3, 3, dtype=torch.float64)
    weight[1, 2, 1, 1] = 1.0  # the centre tap only
    u = transform_weight(weight)
    assert u.shape == (36, 3, 2)
    assert torch.count_nonzero(u[:, :2]) == 0 and torch.count_nonzero(u[:, 2, 0]) == 0
    assert torch.count_nonzero(u[:, 2, 1]) > 0


def test_use_winograd_swaps_only_wide_3x3_stride_1_convolutions():
    model = nn.Sequential(
        nn.Conv2d(128, 128, 3, padding=1),                 # swapped
        nn.Conv2d(128, 128, 3, stride=2, padding=1),       # stride 2
        nn.Conv2d(128, 128, 1),                            # 1x1
        nn.Conv2d(128, 64, 3, padding=1),                  # thin output
        nn.Conv2d(64, 128, 3, padding=1),                  # thin input
        nn.Conv2d(128, 128, 3, padding=1, groups=2),       # grouped
        nn.Conv2d(128, 128, 3, padding=2, dilation=2),     # dilated
        Conv2dSame(128, 128, 3, 1),                        # another class with its own padding rule
        nn.Sequential(nn.Conv2d(256, 256, 3, padding=1)),  # nested, swapped
    )
    keys = list(model.state_dict())
    assert use_winograd(model) == 2
    assert isinstance(model[0], WinogradConv2d) and isinstance(model[8][0], WinogradConv2d)
    assert sum(isinstance(m, WinogradConv2d) for m in model.modules()) == 2
    assert list(model.state_dict()) == keys
    assert use_winograd(model) == 0  # already swapped


def test_one_sgd_step_matches_the_direct_model():
    torch.manual_seed(0)
    direct = nn.Sequential(nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(128, 128, 3, padding=1))
    winograd = copy.deepcopy(direct)
    assert use_winograd(winograd) == 2
    initial = [p.detach().clone() for p in direct.parameters()]
    x = torch.randn(2, 128, 40, 40).contiguous(memory_format=torch.channels_last)
    target = torch.randn(2, 128, 40, 40)
    steps = {}
    for name, model in (("direct", direct), ("winograd", winograd)):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        loss = F.mse_loss(model(x), target)
        loss.backward()
        optimizer.step()
        steps[name] = (float(loss), [p.detach().clone() for p in model.parameters()])
    assert steps["winograd"][0] == pytest.approx(steps["direct"][0], rel=1e-5)
    for after_w, after_d, before in zip(steps["winograd"][1], steps["direct"][1], initial):
        assert _relative(after_w - before, after_d - before) < 1e-4  # the updates agree
        assert float((after_d - before).abs().max()) > 0  # and there was an update


def test_optimiser_made_before_the_swap_still_trains_the_model():
    model = nn.Sequential(nn.Conv2d(128, 128, 3, padding=1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    use_winograd(model)
    before = model[0].weight.detach().clone()
    model(torch.randn(1, 128, 40, 40)).square().mean().backward()
    optimizer.step()
    assert not torch.equal(model[0].weight, before)


def test_a_new_weight_tensor_is_never_mistaken_for_the_cached_one():
    direct, layer = _layer()
    x = torch.randn(1, 128, 20, 20)
    with torch.inference_mode():
        layer(x)
    layer.weight = nn.Parameter(torch.randn_like(direct.weight))  # version 0 again, maybe the same address
    with torch.inference_mode():
        assert _relative(layer(x), F.conv2d(x, layer.weight, layer.bias, padding=1)) < 1e-4
    with torch.inference_mode():  # a weight made under inference_mode keeps no version: no caching
        layer.weight = nn.Parameter(torch.randn_like(direct.weight))
        assert _relative(layer(x), F.conv2d(x, layer.weight, layer.bias, padding=1)) < 1e-4
