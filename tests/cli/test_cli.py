import json

import numpy as np
import pytest
import torch
from PIL import Image

import scaledet
from scaledet.cli.main import SUBCOMMANDS, build_parser, main


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert scaledet.__version__ in capsys.readouterr().out


def test_every_command_has_help_with_a_worked_example(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # registered sub-commands
    assert {"demo", "train", "eval", "eval-results", "predict", "info"} <= set(commands)
    for name in commands:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0
        text = capsys.readouterr().out
        assert "example" in text and "scaledet" in text, name
    assert len(SUBCOMMANDS) >= len(commands)


def test_info_json_has_published_keys(capsys):
    assert main(["info", "retinanet_spinenet49s", "--image-size", "640", "--num-classes", "91", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["anchors"] == 76_725
    assert abs(info["params"] - 12.0e6) / 12.0e6 < 0.01
    assert abs(info["macs"] - 33.8e9) / 33.8e9 < 0.01
    assert [lv["stride"] for lv in info["levels"]] == [8, 16, 32, 64, 128]


def test_unknown_model_is_a_one_line_error(capsys):
    assert main(["info", "retinanet_spinenet50"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "retinanet_spinenet49s" in err  # lists the known ones


def test_config_error_names_key_and_allowed(trained_run, capsys):
    rc = main(["train", str(trained_run["config"]), "--output", str(trained_run["root"] / "x"),
               "--set", "train.totl_steps=3"])
    assert rc == 1
    err = capsys.readouterr().err.strip()
    assert "train.totl_steps" in err and "total_steps" in err and len(err.splitlines()) == 1


def test_missing_checkpoint_names_the_file(tmp_path, capsys):
    img = tmp_path / "a.png"
    Image.new("RGB", (64, 64)).save(img)
    rc = main(["predict", "--checkpoint", str(tmp_path / "nope.pt"), str(img), "--output", str(tmp_path / "o")])
    assert rc == 1
    err = capsys.readouterr().err.strip()
    assert "nope.pt" in err and len(err.splitlines()) == 1


def test_predict_cli_writes_json_and_drawings(trained_run, tmp_path, capsys):
    out = tmp_path / "pred"
    rc = main(["predict", "--checkpoint", str(trained_run["checkpoint"]), str(trained_run["val_images"]),
               "--output", str(out), "--score-threshold", "0.0", "--device", "cpu"])
    assert rc == 0
    records = json.loads((out / "detections.json").read_text())
    assert len(records) == 4
    names = {d["class_name"] for r in records for d in r["detections"]}
    assert names and names <= {"circle", "square", "triangle", "cross", "star"}
    drawn = sorted(out.glob("*.png"))
    assert len(drawn) == 4 and Image.open(drawn[0]).size == (128, 128)


def test_eval_cli_prints_coco_table_and_writes_results(trained_run, tmp_path, capsys):
    rc = main(["eval", str(trained_run["config"]), "--checkpoint", str(trained_run["checkpoint"]),
               "--output", str(tmp_path), "--device", "cpu"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "Average Precision" in out and "maxDets=100" in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results and {"image_id", "category_id", "bbox", "score"} <= set(results[0])


def test_python_predict_accepts_paths_pil_numpy_and_tensors(trained_run):
    from scaledet.engine.inference import model_from_checkpoint

    model = model_from_checkpoint(trained_run["checkpoint"])
    path = sorted(trained_run["val_images"].iterdir())[0]
    pil = Image.open(path).convert("RGB")
    arr = np.asarray(pil)
    tensor = torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()
    # one image per batch: identical inputs then give bit-identical outputs
    outs = model.predict([path, pil, arr, tensor], score_threshold=0.0, batch_size=1)
    assert len(outs) == 4
    ref = outs[0]
    assert len(ref["boxes"]) > 0
    for other in outs[1:]:
        torch.testing.assert_close(other["boxes"], ref["boxes"])
        assert torch.equal(other["labels"], ref["labels"])
    single = model.predict(str(path), score_threshold=0.0)
    assert len(single) == 1 and torch.equal(single[0]["labels"], ref["labels"])
    assert (ref["boxes"][:, 2] <= pil.width).all() and (ref["boxes"][:, 3] <= pil.height).all()


def test_info_says_how_predict_resizes(capsys):
    """retinanet_resnet50_fpn evaluates at a 1024 long side (torchvision's COCO scale), so a
    640 px image is upscaled: info must say so, and what changes it."""
    assert main(["info", "retinanet_resnet50_fpn", "--json"]) == 0
    resize = json.loads(capsys.readouterr().out)["eval_resize"]
    assert "long side resized to 1024 px" in resize and "upscaled" in resize and "image_size" in resize
    assert main(["info", "retinanet_resnet50_fpn", "--image-size", "640", "--json"]) == 0
    assert "640 px" in json.loads(capsys.readouterr().out)["eval_resize"]


def test_info_reports_blitznet_default_boxes(capsys):
    assert main(["info", "blitznet300_r50", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["anchors"] == 45_390
