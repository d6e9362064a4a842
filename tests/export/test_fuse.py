"""BatchNorm folding: same outputs, no BatchNorm left, the original model untouched, shared convs
with different BatchNorms handled."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.utils._pytree as pytree

from scaledet.export.fuse import PerLevelFusedTower, conv_bn_pairs, count_batch_norms, fuse_conv_bn


def _max_relative_error(a, b) -> float:
    return max(float((x - y).abs().max() / (x.abs().max() + 1e-12))
               for x, y in zip(pytree.tree_leaves(a), pytree.tree_leaves(b)))


@pytest.mark.parametrize("family", ["spinenet", "nasfpn", "blitznet"])
def test_fused_copy_computes_the_same(family, family_model):
    model = family_model(family)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    fused = fuse_conv_bn(model)
    with torch.no_grad():
        reference, result = model(x), fused(x)
    assert _max_relative_error(reference, result) < 1e-4
    assert count_batch_norms(model) > 20 and count_batch_norms(fused) == 0
    assert fused.fused_conv_bn_pairs > 20
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # caller's model unchanged
    assert count_batch_norms(model) > 0 and not fused.training


def test_per_level_head_towers_are_unshared(family_model):
    model = family_model("spinenet")
    fused = fuse_conv_bn(model)
    assert fused.fused_towers == 2
    tower = fused.head.cls_tower
    assert isinstance(tower, PerLevelFusedTower)
    levels, convs = len(model.head.cls_tower.norms), len(model.head.cls_tower.convs)
    assert len(tower.levels) == levels and all(len(level) == convs for level in tower.levels)
    # each level folded its own statistics, so the per-level weights differ
    assert not torch.equal(tower.levels[0][0].weight, tower.levels[1][0].weight)


class _SharedConv(nn.Module):
    """One conv feeding two different BatchNorms, plus an ordinary conv -> BN pair."""

    def __init__(self):
        super().__init__()
        self.shared = nn.Conv2d(3, 4, 3, padding=1)
        self.bn_a, self.bn_b = nn.BatchNorm2d(4), nn.BatchNorm2d(4)
        self.conv = nn.Conv2d(4, 4, 1, bias=False)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(self.bn_a(self.shared(x)) + self.bn_b(self.shared(x))))


def test_conv_shared_by_two_batch_norms_is_left_alone():
    torch.manual_seed(0)
    model = _SharedConv()
    for bn in (model.bn_a, model.bn_b, model.bn):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    model.eval()
    x = torch.randn(1, 3, 8, 8)
    pairs = conv_bn_pairs(model, x)
    assert pairs == [(model.conv, model.bn)]
    fused = fuse_conv_bn(model, x)
    assert isinstance(fused.bn, nn.Identity) and isinstance(fused.bn_a, nn.BatchNorm2d)
    with torch.no_grad():
        assert torch.allclose(model(x), fused(x), atol=1e-5)


def _predictions_close(a: list[dict], b: list[dict], atol: float = 1e-3) -> bool:
    return all(len(x["scores"]) == len(y["scores"]) and torch.allclose(x["boxes"], y["boxes"], atol=atol)
               and torch.allclose(x["scores"], y["scores"], atol=atol) for x, y in zip(a, b))


def test_predict_runs_a_cached_fused_copy_that_follows_weight_changes(family_model):
    """Eval-mode predict uses one BN-folded channels-last copy, reused while the weights stay the
    same, remade after load_state_dict, an optimizer step or .to(); training mode runs as is."""
    model = copy.deepcopy(family_model("spinenet")).eval()  # a model of its own: this test changes it
    images = [torch.randint(0, 256, (3, 128, 128), dtype=torch.uint8, generator=torch.Generator().manual_seed(i))
              for i in range(2)]
    first = model.inference_network()
    assert first is not model and count_batch_norms(first) == 0
    assert first.head.cls_tower.levels[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert model.inference_network() is first  # unchanged weights: the same copy

    fused = model.predict(images, score_threshold=0.3)
    model.fuse_for_predict = False
    assert model.inference_network() is model
    plain = model.predict(images, score_threshold=0.3)
    model.fuse_for_predict = True
    assert sum(len(p["scores"]) for p in plain) > 0 and _predictions_close(fused, plain)

    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.head.cls_tower.predictor.bias.add_(1.0)  # in place: more detections
    second = model.inference_network()
    assert second is not first
    moved = model.predict(images, score_threshold=0.3)
    assert not _predictions_close(moved, plain)
    model.load_state_dict(state)
    assert model.inference_network() is not second
    assert _predictions_close(model.predict(images, score_threshold=0.3), plain)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    third = model.inference_network()
    optimizer.step()
    assert model.inference_network() is not third
    model.double()
    assert next(model.inference_network().parameters()).dtype == torch.float64
    model.train()
    assert model.inference_network() is model
