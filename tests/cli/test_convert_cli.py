"""``scaledet convert torchvision-retinanet``: a freshly built torchvision model round-trips."""
import pytest
import torch
import torchvision

from scaledet.cli.main import main
from scaledet.models.convert import CHECKPOINT_FORMAT
from scaledet.models.heads.retina_head import flatten_level
from scaledet.registry import create_model

NUM_CLASSES = 4  # torchvision counts background; keeps the head small


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory):
    torch.manual_seed(1)
    model = torchvision.models.detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None,
                                                                num_classes=NUM_CLASSES).eval()
    path = tmp_path_factory.mktemp("tv") / "tv_retinanet.pt"
    torch.save({"model": model.state_dict()}, path)  # wrapped, as training scripts often save
    return model, path


def test_converted_checkpoint_reproduces_torchvision_outputs(torchvision_file, tmp_path, capsys):
    tv, source = torchvision_file
    out = tmp_path / "ours.pt"
    assert main(["convert", "torchvision-retinanet", str(source), str(out), "--backbone-bn-eps", "1e-5"]) == 0
    assert "retinanet_resnet50_fpn" in capsys.readouterr().out
    checkpoint = torch.load(out, weights_only=True)
    assert checkpoint["format"] == CHECKPOINT_FORMAT
    assert checkpoint["model_name"] == "retinanet_resnet50_fpn"
    assert checkpoint["model_args"] == {"num_classes": NUM_CLASSES, "backbone_bn_eps": 1e-5,
                                        "drop_degenerate_boxes": False}
    ours = create_model(checkpoint["model_name"], **checkpoint["model_args"]).eval()
    ours.load_state_dict(checkpoint["model"])

    x = torch.randn(1, 3, 128, 256)
    with torch.no_grad():
        features = list(tv.backbone(x).values())
        expected = tv.head(features)
        got = ours(x)
    cls = torch.cat([flatten_level(t, NUM_CLASSES) for t in got["cls_logits"]], 1)
    box = torch.cat([flatten_level(t, 4) for t in got["box_deltas"]], 1)
    torch.testing.assert_close(cls, expected["cls_logits"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(box, expected["bbox_regression"], atol=1e-5, rtol=1e-5)


def test_default_records_torchvision_coco_eps_and_refuses_overwrite(torchvision_file, tmp_path, capsys):
    _, source = torchvision_file
    out = tmp_path / "ours.pt"
    assert main(["convert", "torchvision-retinanet", str(source), str(out)]) == 0
    assert torch.load(out, weights_only=True)["model_args"]["backbone_bn_eps"] == 0.0
    assert main(["convert", "torchvision-retinanet", str(source), str(out)]) == 1
    assert "already exists" in capsys.readouterr().err


def test_bad_inputs_fail_with_one_line_naming_the_file(tmp_path, capsys):
    missing = tmp_path / "missing.pt"
    assert main(["convert", "torchvision-retinanet", str(missing), str(tmp_path / "a.pt")]) == 1
    err = capsys.readouterr().err.strip()
    assert str(missing) in err and "not found" in err and len(err.splitlines()) == 1

    classifier = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), classifier)
    assert main(["convert", "torchvision-retinanet", str(classifier), str(tmp_path / "b.pt")]) == 1
    err = capsys.readouterr().err.strip()
    assert str(classifier) in err and "retinanet_resnet50_fpn" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "b.pt").exists()


def test_help_shows_a_worked_example(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", "torchvision-retinanet", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "scaledet convert torchvision-retinanet tv_retinanet.pt" in text


def test_full_disk_keeps_the_previous_conversion_and_a_rerun_works(torchvision_file, tmp_path, monkeypatch, capsys):
    import hashlib

    _, source = torchvision_file
    out = tmp_path / "ours.pt"
    assert main(["convert", "torchvision-retinanet", str(source), str(out)]) == 0
    before = hashlib.sha256(out.read_bytes()).hexdigest()
    real_save = torch.save

    def disk_fills(obj, f, *args, **kwargs):  # half the bytes reach the disk, then torch's writer fails
        f.write(b"PK\x03\x04" + b"\0" * 1000)
        raise RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr(torch, "save", disk_fills)
    assert main(["convert", "torchvision-retinanet", str(source), str(out), "--overwrite"]) == 1
    assert f"no space left on device at {out}" in capsys.readouterr().err
    assert hashlib.sha256(out.read_bytes()).hexdigest() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ours.pt"]
    monkeypatch.setattr(torch, "save", real_save)
    assert main(["convert", "torchvision-retinanet", str(source), str(out), "--overwrite"]) == 0
