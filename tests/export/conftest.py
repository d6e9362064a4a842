"""Narrow models of each family whose random weights still give many, well-separated detections."""
from __future__ import annotations

import pytest
import torch

from scaledet.registry import create_model, list_models

# family -> (registered name, narrow builder arguments, export sizes)
FAMILIES = {
    "spinenet": ("retinanet_spinenet49_tiny", dict(head_width=32, endpoints_num_filters=32), (128, 256)),
    "nasfpn": ("retinanet_nasfpn_r50", dict(depth=18, num_stacks=1, width=32, head_convs=2), (128, 256)),
    "blitznet": ("blitznet_tiny", dict(), (128, 160)),
}


def randomise_batch_norms(model: torch.nn.Module, seed: int = 1) -> None:
    """Non-trivial running statistics and affine terms, so folding them changes the weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.8, 1.2, generator=g)
                m.bias.uniform_(-0.1, 0.1, generator=g)


def make_detecting(model: torch.nn.Module, image_size: int) -> torch.nn.Module:
    """Rescale the predictors so class logits have std ~1.5 around -2 and box deltas std ~0.5:
    a random model then has many detections above a 0.3 threshold, with distinct scores."""
    randomise_batch_norms(model)
    model.eval()
    x = torch.randn(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x)
        if "cls_logits" in out:
            cls_std = torch.cat([t.flatten() for t in out["cls_logits"]]).std()
            box_std = torch.cat([t.flatten() for t in out["box_deltas"]]).std()
            model.head.cls_tower.predictor.weight.mul_(1.5 / cls_std)
            model.head.box_tower.predictor.weight.mul_(0.5 / box_std)
            model.head.cls_tower.predictor.bias.fill_(-2.0)
        else:
            for conv in model.det_head.conf:
                conv.weight.mul_(1.5 / out["conf"].std())
            for conv in model.det_head.loc:
                conv.weight.mul_(0.5 / out["loc"].std())
    return model


def build_family(family: str, **extra) -> torch.nn.Module:
    name, kwargs, sizes = FAMILIES[family]
    if name not in list_models():
        pytest.skip(f"{name} is not registered")
    torch.manual_seed(0)
    model = create_model(name, num_classes=4, score_threshold=0.3, **kwargs, **extra)
    model.class_names = ["cat", "dog", "car", "tree"]
    return make_detecting(model, sizes[0])


@pytest.fixture(scope="session")
def family_model():
    cache: dict[str, torch.nn.Module] = {}

    def get(family: str) -> torch.nn.Module:
        if family not in cache:
            cache[family] = build_family(family)
        return cache[family]

    return get


@pytest.fixture(autouse=True)
def _export_tests_run_on_one_thread(one_thread):
    """Every test of this folder runs on one thread (``one_thread`` in tests/conftest.py)."""


@pytest.fixture(scope="session")
def export_sizes():
    """family -> the two square input sizes its parity test exports at."""
    return {family: sizes for family, (_, _, sizes) in FAMILIES.items()}
