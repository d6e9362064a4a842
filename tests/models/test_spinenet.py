"""SpineNet backbone and the registered RetinaNet-SpineNet models: faithfulness to the published
sizes (docs/reference/SPINENET.md §1.12-1.13) and behaviour of the scale-permuted wiring."""
import pytest
import torch
import torch.nn as nn

import scaledet
from scaledet.models.backbones.spinenet import (
    BOTTLENECK,
    RESIDUAL,
    BlockSpec,
    SpineNet,
    spinenet,
)
from scaledet.registry import builder_arguments, register_model
from scaledet.utils.flops import count_macs, count_params

# (model, input size) -> published params (M), multiply-adds (B); paper / tpu model zoo.
PUBLISHED = {
    "retinanet_spinenet49s": (640, 12.0, 33.8),
    "retinanet_spinenet49": (640, 28.5, 85.4),
    "retinanet_spinenet96": (1024, 43.0, 265.4),
    "retinanet_spinenet143": (1280, 66.9, 524.4),
    "retinanet_spinenet190": (1280, 163.6, 1885.0),
}


def narrow_49s(**overrides) -> nn.Module:
    args = dict(filter_size_scale=0.125, endpoints_num_filters=32, head_width=32, head_convs=2,
                num_classes=5, image_size=256)
    args.update(overrides)
    return scaledet.create_model("retinanet_spinenet49s", **args)


def narrow_backbone(**overrides) -> SpineNet:
    args = dict(filter_size_scale=0.125, endpoints_num_filters=16)
    args.update(overrides)
    return spinenet("49", **args)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_params_and_macs(name):
    size, params_m, macs_b = PUBLISHED[name]
    with torch.device("meta"):
        model = scaledet.create_model(name)  # 91 classes, 9 anchors by default
    assert model.default_image_size == size
    assert model.head.num_anchors == 9 and model.num_classes == 91
    assert count_params(model) / 1e6 == pytest.approx(params_m, rel=0.01)
    assert count_macs(model, size) / 1e9 == pytest.approx(macs_b, rel=0.01)


def test_49s_with_tpu_code_endpoints_matches_own_arithmetic():
    # docs/reference/SPINENET.md §1.12: 128-channel endpoints (the tpu code) give 9.09M backbone,
    # 11.27M / 30.8G model.
    with torch.device("meta"):
        model = scaledet.create_model("retinanet_spinenet49s", endpoints_num_filters=128)
    assert count_params(model.backbone) / 1e6 == pytest.approx(9.09, abs=0.005)
    assert count_params(model) / 1e6 == pytest.approx(11.27, abs=0.005)
    assert count_macs(model, 640) / 1e9 == pytest.approx(30.8, abs=0.05)


def test_49s_widths_and_resampling_follow_the_tpu_rules():
    with torch.device("meta"):
        net = spinenet("49S")
    # docs/reference/SPINENET.md §1.5: stem parents squeeze 41 -> int(41 * 0.5) = 20, then expand
    # to block 2's 4 * 41.
    squeeze, expand = net.blocks[0].resamples[0].layers[0][0], net.blocks[0].resamples[0].layers[-1][0]
    assert (squeeze.in_channels, squeeze.out_channels, expand.out_channels) == (164, 20, 164)
    # Block 15 <- block 5 is L4 -> L7: stride-2 conv then one max pool with kernel 5, stride 4.
    pools = [m for m in net.blocks[13].resamples[0].modules() if isinstance(m, nn.MaxPool2d)]
    assert [(p.kernel_size, p.stride) for p in pools] == [(5, 4)]
    # Block 6 <- block 3 is L4 -> L6: kernel 3, stride 2.
    pools = [m for m in net.blocks[4].resamples[0].modules() if isinstance(m, nn.MaxPool2d)]
    assert [(p.kernel_size, p.stride) for p in pools] == [(3, 2)]
    # The 7x7 stem conv is never width-scaled; the stem group 1 projects 64 -> 164.
    assert net.stem[0][0].out_channels == 64
    assert not isinstance(net.stem_groups[0][0].shortcut, nn.Identity)
    assert isinstance(net.stem_groups[1][0].shortcut, nn.Identity)
    # No scale-permuted block projects: the resample already produces its channel count.
    assert all(isinstance(b.shortcut, nn.Identity) for block in net.blocks for b in block.group)


def test_narrow_49s_forward_backward_on_cpu():
    torch.manual_seed(0)
    model = narrow_49s()
    images = torch.randn(2, 3, 256, 256)
    outputs = model(images)
    anchors, classes = 9, 5
    for level, (cls, box) in enumerate(zip(outputs["cls_logits"], outputs["box_deltas"]), start=3):
        side = 256 // 2 ** level
        assert cls.shape == (2, anchors * classes, side, side)
        assert box.shape == (2, anchors * 4, side, side)
    targets = [
        dict(boxes=torch.tensor([[10.0, 20.0, 100.0, 120.0]]), labels=torch.tensor([1]),
             iscrowd=torch.tensor([False])),
        dict(boxes=torch.tensor([[50.0, 50.0, 200.0, 150.0], [0.0, 0.0, 30.0, 30.0]]),
             labels=torch.tensor([0, 4]), iscrowd=torch.tensor([False, False])),
    ]
    loss = model.loss(outputs, targets, [(256, 256)] * 2)["loss"]
    assert torch.isfinite(loss)
    loss.backward()
    stem_grad = model.backbone.stem[0][0].weight.grad
    assert stem_grad is not None and torch.isfinite(stem_grad).all() and stem_grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_feature_info_matches_outputs():
    net = narrow_backbone().eval()
    with torch.no_grad():
        features = net(torch.randn(1, 3, 128, 256))
    assert [(f.channels, f.stride) for f in net.feature_info] == [(16, 2 ** lvl) for lvl in range(3, 8)]
    assert [tuple(f.shape[1:]) for f in features] == [(16, 128 // 2 ** lvl, 256 // 2 ** lvl)
                                                      for lvl in range(3, 8)]


def test_unused_block_11_feeds_block_14_in_spinenet49():
    net = narrow_backbone().eval()
    merges = {k + 2: block.unused_inputs for k, block in enumerate(net.blocks) if block.unused_inputs}
    assert merges == {14: (11,)}

    images = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        plain = net(images)
        handle = net.blocks[9].register_forward_hook(lambda mod, inp, out: out + 10.0)  # block 11
        shifted = net(images)
        handle.remove()
    p3, p4, p5, p6, p7 = (torch.equal(a, b) for a, b in zip(plain, shifted))
    assert p3 and p4  # blocks 13 and 12 do not depend on block 11
    assert not (p5 or p6 or p7)  # block 14 (P5) takes it raw; 15 and 16 consume 14


def _toy_specs(first: BlockSpec, second_parents: tuple[int, int], third_type: str) -> tuple[BlockSpec, ...]:
    return (
        first,
        BlockSpec(3, BOTTLENECK, second_parents, True),
        BlockSpec(4, third_type, (1, 3), True),
        BlockSpec(5, BOTTLENECK, (3, 4), True),
        BlockSpec(6, BOTTLENECK, (4, 5), True),
        BlockSpec(7, BOTTLENECK, (5, 6), True),
    )


def test_unused_rule_counts_parents_first_and_needs_equal_channels():
    kwargs = dict(filter_size_scale=0.125, endpoints_num_filters=8)
    # Block 2 (L3) is consumed by block 3 as a parent: tpu order does not add it again raw.
    net = SpineNet(block_specs=_toy_specs(BlockSpec(3, BOTTLENECK, (0, 1), False), (0, 2), BOTTLENECK),
                   **kwargs)
    assert all(b.unused_inputs == () for b in net.blocks)
    # Block 2 is an unconsumed L4 residual: merged into the L4 output only if that is residual too.
    unused_l4 = BlockSpec(4, RESIDUAL, (0, 1), False)
    net = SpineNet(block_specs=_toy_specs(unused_l4, (0, 1), RESIDUAL), **kwargs)
    assert [b.unused_inputs for b in net.blocks] == [(), (), (2,), (), (), ()]
    net = SpineNet(block_specs=_toy_specs(unused_l4, (0, 1), BOTTLENECK), **kwargs)
    assert all(b.unused_inputs == () for b in net.blocks)


def test_bad_specs_are_rejected():
    specs = _toy_specs(BlockSpec(3, BOTTLENECK, (0, 1), False), (0, 2), BOTTLENECK)
    with pytest.raises(ValueError, match="parents"):
        SpineNet(block_specs=(BlockSpec(3, BOTTLENECK, (0, 5), False),) + specs[1:])
    with pytest.raises(ValueError, match="level 7"):
        SpineNet(block_specs=specs[:-1])


def test_input_not_divisible_by_128_raises():
    net = narrow_backbone()
    with pytest.raises(ValueError, match="multiples of 128"):
        net(torch.randn(1, 3, 128, 200))


def test_detector_pads_inputs_not_divisible_by_128():
    model = narrow_49s().eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 200, 130))
    assert outputs["cls_logits"][0].shape[-2:] == (256 // 8, 256 // 8)


@pytest.mark.parametrize("act, present, absent", [("relu", nn.ReLU, nn.SiLU), ("swish", nn.SiLU, nn.ReLU)])
def test_activation_choice_reaches_backbone_and_head(act, present, absent):
    model = narrow_49s(activation=act)
    kinds = [type(m) for m in model.modules()]
    assert present in kinds and absent not in kinds


def test_relu_and_swish_give_different_features():
    torch.manual_seed(0)
    relu = narrow_backbone(activation="relu").eval()
    swish = narrow_backbone(activation="swish").eval()
    swish.load_state_dict(relu.state_dict())
    images = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert not torch.allclose(relu(images)[0], swish(images)[0])


def test_endpoint_activation_is_a_flag():
    with_act = narrow_backbone(endpoint_activation=True)
    without = narrow_backbone(endpoint_activation=False)
    assert len(with_act.endpoints[0]) == 3 and len(without.endpoints[0]) == 2


def test_drop_connect_rates_grow_with_depth_and_skip_the_stem():
    net = narrow_backbone(drop_connect_rate=0.3, block_repeats=2)
    assert all(b.drop_connect_rate == 0.0 for group in net.stem_groups for b in group)
    for k, block in enumerate(net.blocks, start=1):
        assert [b.drop_connect_rate for b in block.group] == [pytest.approx(0.3 * k / 15)] * 2


def test_drop_connect_is_identity_in_eval_and_stochastic_in_train():
    torch.manual_seed(0)
    dropping = narrow_backbone(drop_connect_rate=0.5)
    plain = narrow_backbone(drop_connect_rate=0.0)
    plain.load_state_dict(dropping.state_dict())
    images = torch.randn(4, 3, 128, 128)
    with torch.no_grad():
        dropping.eval(), plain.eval()
        assert torch.equal(dropping(images)[0], plain(images)[0])
        dropping.train(), plain.train()
        assert torch.equal(plain(images)[0], plain(images)[0])  # train-mode BN alone is deterministic
        torch.manual_seed(1)
        first = dropping(images)[0]
        torch.manual_seed(2)
        second = dropping(images)[0]
        assert not torch.allclose(first, second)


def test_convs_use_truncated_variance_scaling_init():
    net = narrow_backbone(filter_size_scale=1.0)
    conv = net.blocks[0].group[0].branch[1][0]  # a 3x3 conv, 64 -> 64, fan_in 576
    bound = 2 * (1 / 576) ** 0.5 / 0.87962566103423978
    assert conv.weight.abs().max() <= bound + 1e-6
    assert conv.weight.std().item() == pytest.approx((1 / 576) ** 0.5, rel=0.05)


def test_tiny_model_matches_its_recipe():
    model = scaledet.create_model("retinanet_spinenet49_tiny")
    assert model.default_image_size == 256
    assert [f.channels for f in model.backbone.feature_info] == [64] * 5
    head_convs = [m for m in model.head.modules() if isinstance(m, nn.Conv2d) and m.out_channels == 64]
    assert len(head_convs) == 4  # 2 tower convs in each of the class and box towers
    assert not any(isinstance(m, nn.SiLU) for m in model.modules())
    assert all(b.drop_connect_rate == 0 for m in model.backbone.blocks for b in m.group)
    assert count_params(model) < 2.5e6


def test_registered_builders_forward_retinanet_arguments():
    allowed = builder_arguments("retinanet_spinenet49")
    assert {"drop_connect_rate", "endpoints_num_filters", "norm", "max_detections", "focal_gamma"} <= set(allowed)
    assert "backbone" not in allowed
    model = narrow_49s(max_detections=7, norm={"momentum": 0.01, "eps": 1e-3}).eval()
    bn = model.backbone.stem[0][1]
    assert (bn.momentum, bn.eps) == (0.01, 1e-3)
    with torch.no_grad():
        result = model.postprocess(model(torch.randn(1, 3, 256, 256)), [(256, 256)])
    assert result["boxes"].shape == (1, 7, 4)
    with pytest.raises(TypeError, match="allowed: .*focal_gamma"):
        scaledet.create_model("retinanet_spinenet49", no_such_argument=1)


def test_forwards_to_requires_kwargs():
    def builder_without_kwargs(*, num_classes: int = 1) -> nn.Module:
        return nn.Identity()

    with pytest.raises(TypeError, match="no \\*\\*kwargs"):
        register_model(forwards_to=scaledet.create_model)(builder_without_kwargs)
    assert "builder_without_kwargs" not in scaledet.list_models()


def test_drop_connect_drops_or_rescales_whole_samples():
    from scaledet.models.common import drop_connect

    torch.manual_seed(0)
    x = torch.randn(200, 3, 4, 4)
    out = drop_connect(x, 0.25, training=True)
    dropped = (out == 0).flatten(1).all(dim=1)
    assert 20 < int(dropped.sum()) < 80  # about a quarter of the samples
    torch.testing.assert_close(out[~dropped], x[~dropped] / 0.75)
    assert drop_connect(x, 0.25, training=False) is x
