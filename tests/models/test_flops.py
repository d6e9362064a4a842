import pytest
import torch
import torch.nn as nn

from scaledet.utils.flops import count_macs, count_params


def tiny_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),          # 8*3*3*3 + 8 = 224 params
        nn.BatchNorm2d(8),                       # 16 params (running stats are buffers)
        nn.ReLU(),
        nn.Conv2d(8, 4, 1, stride=2, bias=False),  # 32 params
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 5),                         # 25 params
    )


def expected_macs(h: int, w: int, batch: int) -> int:
    conv3x3 = h * w * 8 * 3 * 3 * 3
    conv1x1 = (h // 2) * (w // 2) * 4 * 8
    linear = 4 * 5
    return batch * (conv3x3 + conv1x1 + linear)


def test_count_params_matches_hand_count():
    model = tiny_net()
    assert count_params(model) == 224 + 16 + 32 + 25
    model[0].weight.requires_grad_(False)
    assert count_params(model, trainable_only=True) == 224 + 16 + 32 + 25 - 216


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_count_macs_matches_hand_count(device):
    model = tiny_net()
    assert count_macs(model, 16, device=device) == expected_macs(16, 16, 1)
    assert count_macs(model, (8, 12), batch=3, device=device) == expected_macs(8, 12, 3)


def test_meta_counting_leaves_the_model_untouched():
    model = tiny_net().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_macs(model, 32, device="meta")
    assert model.training
    after = model.state_dict()
    assert all(after[k].device.type == "cpu" and torch.equal(after[k], v) for k, v in before.items())


def test_meta_built_model_can_be_counted():
    with torch.device("meta"):
        model = tiny_net()
    assert count_params(model) == 297
    assert count_macs(model, 16) == expected_macs(16, 16, 1)
