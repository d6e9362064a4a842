"""Backbone weights named like ``torchvision:ResNet50_Weights.IMAGENET1K_V1`` load offline from
torchvision's cache folder; nothing is downloaded."""
import pytest
import torch
import torchvision

from scaledet.errors import CheckpointError, MissingFileError, ScaledetError
from scaledet.models.backbones.blitz_resnet import blitz_resnet50
from scaledet.models.backbones.resnet import resnet
from scaledet.models.weights import resolve_weights
from scaledet.registry import create_model

NAME = "torchvision:ResNet50_Weights.IMAGENET1K_V1"


@pytest.fixture
def offline(monkeypatch):
    """No download may happen: torch.hub's download functions fail the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"attempted a download: {args}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.delenv("SCALEDET_ALLOW_DOWNLOAD", raising=False)


@pytest.fixture(scope="module")
def resnet50_state():
    torch.manual_seed(0)
    return torchvision.models.resnet50().state_dict()  # randomly initialised; the keys of the real file


def plant(torch_home, state) -> None:
    cache = torch_home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    # the file name of the enum's URL: what torchvision's own loader looks for in its cache
    torch.save(state, cache / "resnet50-0676ba61.pth")


def test_weights_by_name_load_from_a_planted_cache_file(tmp_path, monkeypatch, offline, resnet50_state):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    plant(tmp_path, resnet50_state)
    assert resolve_weights(NAME) == tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    model = create_model("retinanet_resnet50_fpn", num_classes=3, pretrained_backbone=NAME)
    backbone = model.backbone
    assert backbone.load_report.missing == () and backbone.load_report.unexpected == ()
    for key in ("conv1.weight", "layer3.5.conv2.weight", "layer4.2.bn3.running_var"):
        assert torch.equal(backbone.state_dict()[key], resnet50_state[key]), key


def test_missing_cache_file_is_one_line_naming_file_folder_and_remedy(tmp_path, monkeypatch, offline):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingFileError) as caught:
        create_model("retinanet_resnet50_fpn", num_classes=3, pretrained_backbone=NAME)
    message = str(caught.value)
    cache = tmp_path / "hub" / "checkpoints"
    assert "\n" not in message
    assert f"{cache / 'resnet50-0676ba61.pth'}" in message and f"cache {cache}" in message
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in message and "place it there" in message


def test_strict_by_default_lists_keys_and_can_be_relaxed(tmp_path, monkeypatch, offline, resnet50_state):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    state = dict(resnet50_state)
    del state["layer2.0.downsample.0.weight"]
    plant(tmp_path, state)
    with pytest.raises(CheckpointError, match=r"1 missing keys \[layer2.0.downsample.0.weight\]"):
        blitz_resnet50(pretrained=NAME)  # BlitzNet's trunk has torchvision's ResNet-50 names
    backbone = resnet(50, pretrained=NAME, pretrained_strict=False)
    assert backbone.load_report.missing == ("layer2.0.downsample.0.weight",)


def test_unknown_torchvision_name_is_a_user_error(offline):
    with pytest.raises(ScaledetError, match="torchvision:ResNet50_Weights.NOPE: not a torchvision weights name"):
        resolve_weights("torchvision:ResNet50_Weights.NOPE")


def test_checkpoints_do_not_name_the_backbone_weights_file():
    """A checkpoint holds the trained weights: rebuilding from it must not need the ImageNet file."""
    from scaledet.config import load_config
    from scaledet.engine.trainer import model_record

    cfg = load_config(None, [f"model.args={{pretrained_backbone: '{NAME}', pretrained_strict: false, head_width: 32}}"])
    model = create_model("retinanet_spinenet49_tiny", num_classes=2, head_width=32, endpoints_num_filters=32)
    assert model_record(cfg, model)["model_args"] == {"head_width": 32, "num_classes": 2}


def test_download_only_when_the_user_opts_in(tmp_path, monkeypatch, resnet50_state):
    """Without SCALEDET_ALLOW_DOWNLOAD=1 nothing is fetched; with it torch.hub fetches the enum's
    URL into the cache (stood in for here: this machine has no network)."""
    fetched = []

    def fake_download(url, destination, *args, **kwargs):
        fetched.append(url)
        torch.save(resnet50_state, destination)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("SCALEDET_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(MissingFileError):
        resolve_weights(NAME)
    assert fetched == []
    monkeypatch.setenv("SCALEDET_ALLOW_DOWNLOAD", "1")
    assert resolve_weights(NAME) == tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    assert fetched == ["https://download.pytorch.org/models/resnet50-0676ba61.pth"]
