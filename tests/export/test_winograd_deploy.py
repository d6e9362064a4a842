"""The deployment copy (``optimized_for_inference``, and so ``predict``) runs wide 3x3
convolutions by Winograd in fp32 and computes what the direct copy computes, to fp32 rounding."""
from __future__ import annotations

import pytest
import torch

from scaledet.ops.winograd import WinogradConv2d
from scaledet.registry import create_model


def _winograd_layers(model) -> int:
    return sum(isinstance(m, WinogradConv2d) for m in model.modules())


@pytest.fixture(scope="module")
def resnet_retinanet():
    torch.manual_seed(0)
    return create_model("retinanet_resnet50_fpn", num_classes=5).eval()


def test_deploy_copy_uses_winograd_and_matches_the_direct_copy(resnet_retinanet):
    model = resnet_retinanet
    deploy = model.optimized_for_inference()
    direct = model.optimized_for_inference(winograd=False)
    assert _winograd_layers(model) == 0 and _winograd_layers(direct) == 0
    assert _winograd_layers(deploy) >= 20  # ResNet stages 2-4, FPN outputs, head towers and class predictor
    assert list(deploy.state_dict()) == list(direct.state_dict())
    x = torch.randn(1, 3, 160, 160, generator=torch.Generator().manual_seed(1))  # P3 is 20 x 20
    with torch.inference_mode():
        ours, reference = deploy(x), direct(x)
    for key in ("cls_logits", "box_deltas"):
        for a, b in zip(ours[key], reference[key]):
            assert float((a - b).abs().max() / b.abs().max()) < 1e-4
    # the P3 class logits went through Winograd (20 x 20 >= min_area), so they are not bit-equal
    assert not torch.equal(ours["cls_logits"][0], reference["cls_logits"][0])


def test_predict_runs_the_winograd_copy_and_bf16_does_not(resnet_retinanet):
    assert _winograd_layers(resnet_retinanet.inference_network()) >= 20
    assert _winograd_layers(resnet_retinanet.optimized_for_inference(precision="bf16")) == 0
