import logging

import pytest
import torch
import torchvision
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.ops import FrozenBatchNorm2d

from scaledet.models.backbones.resnet import ResNetBackbone, resnet
from scaledet.errors import CheckpointError
from scaledet.models.common import FeatureInfo, NormSettings


def test_resnet50_feature_info_matches_outputs():
    with torch.device("meta"):
        backbone = resnet(50)
        outputs = backbone(torch.empty(2, 3, 256, 384))
    assert backbone.feature_info == [FeatureInfo(512, 8), FeatureInfo(1024, 16), FeatureInfo(2048, 32)]
    for out, info in zip(outputs, backbone.feature_info):
        assert out.shape == (2, info.channels, 256 // info.stride, 384 // info.stride)
    assert not hasattr(backbone, "fc") and not hasattr(backbone, "avgpool")


def test_loads_torchvision_weights_and_matches_its_trunk(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18().eval()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)  # includes fc.*, which the backbone drops
    backbone = resnet(18, pretrained=path, frozen_bn=False).eval()
    assert backbone.load_report.missing == () and backbone.load_report.unexpected == ()
    extractor = create_feature_extractor(reference, {"layer2": "c3", "layer3": "c4", "layer4": "c5"})
    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        expected = extractor(x)
        got = backbone(x)
    for name, tensor in zip(("c3", "c4", "c5"), got):
        torch.testing.assert_close(tensor, expected[name])


def test_wrapped_state_dict_with_missing_and_unexpected_keys_is_an_error_unless_not_strict(tmp_path, caplog):
    state = torchvision.models.resnet18().state_dict()
    state.pop("layer4.1.conv2.weight")
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    with pytest.raises(CheckpointError, match=r"1 missing keys \[layer4.1.conv2.weight\], 1 unexpected keys "
                                              r"\[extra.weight\].*pretrained_strict"):
        resnet(18, pretrained=path)
    with caplog.at_level(logging.WARNING):
        backbone = resnet(18, pretrained=path, pretrained_strict=False)
    assert backbone.load_report.missing == ("layer4.1.conv2.weight",)
    assert backbone.load_report.unexpected == ("extra.weight",)
    assert str(path) in caplog.text and "missing" in caplog.text
    assert torch.equal(backbone.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])


def test_missing_pretrained_file_names_the_path(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        resnet(18, pretrained=path)


def test_trainable_layers_follow_torchvision():
    def trainable_prefixes(model):
        return {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}

    kwargs = dict(block="basic", layers=(1, 1, 1, 1), frozen_bn=False)
    assert trainable_prefixes(ResNetBackbone(**kwargs, trainable_layers=3)) == {"layer2", "layer3", "layer4"}
    assert trainable_prefixes(ResNetBackbone(**kwargs, trainable_layers=5)) == {
        "conv1", "bn1", "layer1", "layer2", "layer3", "layer4"}
    assert trainable_prefixes(ResNetBackbone(**kwargs, trainable_layers=0)) == set()
    with pytest.raises(ValueError, match="trainable_layers"):
        ResNetBackbone(**kwargs, trainable_layers=6)


def test_frozen_bn_is_fixed_in_training_and_trainable_bn_uses_settings():
    torch.manual_seed(0)
    frozen = ResNetBackbone("basic", (1, 1, 1, 1), frozen_bn=True, norm=NormSettings(eps=0.0))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen.modules())
    assert all(m.eps == 0.0 for m in frozen.modules() if isinstance(m, FrozenBatchNorm2d))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        train_out = frozen.train()(x)[-1]
        eval_out = frozen.eval()(x)[-1]
    torch.testing.assert_close(train_out, eval_out)

    trainable = ResNetBackbone("basic", (1, 1, 1, 1), frozen_bn=False, norm=NormSettings(momentum=0.01, eps=1e-3))
    bns = [m for m in trainable.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.momentum == 0.01 and m.eps == 1e-3 for m in bns)
