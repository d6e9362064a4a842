"""bf16 inference copies: fp32 in and out, bfloat16 inside, close to fp32, the caller's model
untouched, and the precision a separate cached copy for ``predict``."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.utils._pytree as pytree
from torchvision.ops import box_iou

from scaledet.errors import UsageError


def _relative_errors(a, b) -> list[float]:
    return [float((x.float() - y).abs().max() / (y.abs().max() + 1e-12))
            for x, y in zip(pytree.tree_leaves(a), pytree.tree_leaves(b))]


@pytest.mark.parametrize("family", ["spinenet", "nasfpn", "blitznet"])
def test_bf16_copy_takes_and_returns_fp32_and_stays_close(family, family_model):
    model = family_model(family)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(4))
    fp32 = model.optimized_for_inference()
    bf16 = model.optimized_for_inference(precision="bf16")
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        reference, result = fp32(x), bf16(x)
    assert {t.dtype for t in pytree.tree_leaves(result)} == {torch.float32}
    errors = _relative_errors(result, reference)
    # bf16 keeps 8 significant bits: a deep network's outputs move by a few percent of their
    # range, and never by their whole range (what a wrong cast or a dropped layer gives).
    assert max(errors) < 0.08 and min(errors) > 0, errors
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_predict_in_bf16_finds_the_fp32_detections(family_model):
    model = copy.deepcopy(family_model("spinenet")).eval()
    images = [torch.randint(0, 256, (3, 128, 128), dtype=torch.uint8, generator=torch.Generator().manual_seed(i))
              for i in range(2)]
    fp32 = model.predict(images, score_threshold=0.3)
    bf16_network = model.inference_network("bf16")
    assert bf16_network is not model.inference_network() and model.inference_network("bf16") is bf16_network
    bf16 = model.predict(images, score_threshold=0.3, precision="bf16")
    for a, b in zip(fp32, bf16):
        assert len(a["scores"]) > 5 and b["boxes"].dtype == torch.float32
        # The ten strongest scores agree; each of the three strongest fp32 detections has a bf16
        # one of its label over it (IoU > 0.7: a random model has near-tied neighbouring anchors,
        # and NMS may keep the neighbour, one anchor step away).
        assert torch.allclose(a["scores"].sort(descending=True).values[:10],
                              b["scores"].sort(descending=True).values[:10], atol=0.02)
        for top in a["scores"].argsort(descending=True)[:3]:
            same_label = b["labels"] == a["labels"][top]
            assert box_iou(a["boxes"][top][None], b["boxes"][same_label]).max() > 0.7
    again = model.predict(images, score_threshold=0.3)  # fp32 again: unchanged by the bf16 call
    assert all(torch.equal(x["boxes"], y["boxes"]) for x, y in zip(fp32, again))


def test_unknown_precision_is_a_usage_error(family_model):
    with pytest.raises(UsageError, match="fp16.*allowed: fp32, bf16"):
        family_model("spinenet").optimized_for_inference(precision="fp16")


def test_bf16_is_refused_where_it_cannot_apply():
    from scaledet.engine.prediction_io import predictor_for

    with pytest.raises(UsageError, match="torch backend.*--int8"):
        predictor_for("onnxruntime", checkpoint=None, onnx_model="m.onnx", precision="bf16")
