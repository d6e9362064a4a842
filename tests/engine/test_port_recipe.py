"""The MindSpore NAS-FPN port's recipe end to end: its schedule against the port's log, training and
evaluation from the port's MindRecord files, and a converted port checkpoint through eval, predict,
export and train (fixture: nasfpn_mindspore_ref; see its SOURCE.md)."""
import json

import pytest

from scaledet.cli.main import main
from scaledet.config import load_config, save_config
from scaledet.engine.checkpoint import load_checkpoint
from scaledet.engine.schedules import learning_rate

RECIPE = "retinanet_nasfpn_r50_port"
# The port's training log prints after epoch k the lr of that epoch's last step (README_CN.md;
# docs/reference/MINDSPORE_FORMATS.md §5); 916 steps per epoch at 8 devices x 16 images.
LOGGED = {3: 2.8e-5, 4: 4.6e-5, 5: 6.4e-5, 6: 8.2e-5}
STEPS_PER_EPOCH = 916


@pytest.mark.parametrize("epoch", sorted(LOGGED))
def test_recipe_lr_matches_the_port_log(epoch):
    cfg = load_config(RECIPE)
    total = cfg.train.max_epochs * STEPS_PER_EPOCH
    assert learning_rate(cfg.optim, epoch * STEPS_PER_EPOCH - 1, total) == pytest.approx(LOGGED[epoch], rel=0.02)


def test_recipe_reproduces_the_port_settings():
    cfg = load_config(RECIPE)
    assert (cfg.model.name, cfg.data.format, cfg.data.augment) == (RECIPE, "mindrecord", "port_iou_crop")
    assert (cfg.optim.schedule, cfg.eval.image_filter, cfg.optim.decay_norm_and_bias) == \
        ("mindspore_nasfpn", "annotated_non_crowd", False)


@pytest.fixture(scope="module")
def mindrecord(shared_data):
    folder = shared_data / "nasfpn_mindspore_ref" / "mindrecord"
    if not (folder / "retinanet.mindrecord0.db").is_file():
        pytest.skip(f"{folder} not available")
    return folder


def _fixture_config(tmp_path, folder, *overrides):
    cfg = load_config(RECIPE, [
        f"data.root={folder}", "data.train_pattern=retinanet.mindrecord0", "data.num_workers=0",
        "data.val_pattern=retinanet_eval.mindrecord0", "data.val_annotations=instances_val2017_subset.json",
        "train.batch_size=2", "train.total_steps=2", "train.max_epochs=null", "train.checkpoint_every=2",
        "train.log_every=1", "eval.batch_size=2", "optim.lr=0.01", "train.channels_last=false", *overrides])
    path = tmp_path / "port.yaml"
    save_config(cfg, path)
    return path


def test_recipe_trains_and_evaluates_from_the_mindrecord_fixture(mindrecord, tmp_path, capsys, one_thread):
    """A narrow port network: two steps on the port's training MindRecord, then COCO AP on its eval one."""
    config = _fixture_config(tmp_path, mindrecord, "model.image_size=128",
                             "model.args={width_multiplier: 0.0625, width: 16, num_stacks: 1, head_width: 8}")
    assert main(["train", str(config), "--output", str(tmp_path / "run"), "--no-progress", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "Average Precision (AP) @[ IoU=0.50:0.95 | area=   all" in printed
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["step"] == 2 and state["model_name"] == RECIPE
    assert main(["eval", str(config), "--checkpoint", str(tmp_path / "run" / "last.pt"), "--json",
                 "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert 0.0 <= metrics["AP"] <= 1.0 and 0.0 <= metrics["AP50"] <= 1.0


def test_converted_port_checkpoint_through_eval_predict_export_train(mindrecord, shared_data, tmp_path, capsys,
                                                                    one_thread):
    ref = shared_data / "nasfpn_mindspore_ref"
    converted = tmp_path / "port.pt"
    assert main(["convert", "mindspore-nasfpn", str(ref / "nasfpn_narrow.ckpt"), str(converted),
                 "--image-size", "256"]) == 0
    assert "retinanet_nasfpn_r50_port, 20 classes" in capsys.readouterr().out
    assert main(["convert", "mindspore-nasfpn", str(ref / "nasfpn_narrow.ckpt"), str(converted)]) == 1
    assert "already exists" in capsys.readouterr().err

    # eval on the port's eval MindRecord: the port's own COCOeval of its detections gave AP 0.00167
    config = _fixture_config(tmp_path, mindrecord)
    assert main(["eval", str(config), "--checkpoint", str(converted), "--json", "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    port = json.loads((ref / "outputs_summary.json").read_text())["mAP_port_metrics"]
    assert metrics["AP"] == pytest.approx(port, abs=2e-4)

    image = shared_data / "coco_tiny" / "val2017" / "000000223747.jpg"
    assert main(["predict", str(image), "--checkpoint", str(converted), "--output", str(tmp_path / "pred"),
                 "--score-threshold", "0.2", "--no-optimize"]) == 0
    predicted = json.loads((tmp_path / "pred" / "detections.json").read_text())
    assert predicted and capsys.readouterr()

    # train from it (model.init_checkpoint); the first eval image's objects are of the 20 classes
    config = _fixture_config(tmp_path, mindrecord, "model.num_classes=20", "model.image_size=256",
                             f"model.init_checkpoint={converted}", "model.args={width_multiplier: 0.125, "
                             "width: 32, num_stacks: 2, head_width: 16}", "data.train_pattern=retinanet_eval.mindrecord0",
                             "data.max_images=1", "train.total_steps=1", "train.checkpoint_every=1")
    assert main(["train", str(config), "--output", str(tmp_path / "run"), "--no-progress", "--device", "cpu"]) == 0
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 1


def test_converted_port_checkpoint_exports_to_onnx(shared_data, tmp_path, capsys, one_thread):
    converted = tmp_path / "port.pt"
    assert main(["convert", "mindspore-nasfpn", str(shared_data / "nasfpn_mindspore_ref" / "nasfpn_narrow.ckpt"),
                 str(converted), "--image-size", "256"]) == 0
    assert main(["export", "--checkpoint", str(converted), "--output", str(tmp_path / "port.onnx")]) == 0
    assert "checked against PyTorch with ONNX Runtime" in capsys.readouterr().out


def test_bad_mindrecord_input_fails_in_one_line_naming_the_file(mindrecord, tmp_path, capsys):
    """Through `scaledet train`: a shard without its .db index, then a corrupt page."""
    import shutil

    folder = tmp_path / "mindrecord"
    shutil.copytree(mindrecord, folder)
    shard = max(folder.glob("retinanet.mindrecord[0-7]"), key=lambda p: p.stat().st_size)  # one with rows
    index = shard.with_name(shard.name + ".db")
    index.rename(tmp_path / "saved.db")
    config = _fixture_config(tmp_path, folder, "model.image_size=128", "model.args={width_multiplier: 0.0625, "
                             "width: 8, num_stacks: 1, head_width: 8}", "train.total_steps=1")
    run = tmp_path / "run"
    assert main(["train", str(config), "--output", str(run), "--no-progress", "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(shard) in err and ".db is missing" in err

    (tmp_path / "saved.db").rename(index)
    data = bytearray(shard.read_bytes())
    start = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])["header_size"]
    data[start:start + 8] = (10 ** 9).to_bytes(8, "big")  # the first row's length: past the page's end
    shard.write_bytes(bytes(data))
    assert main(["train", str(config), "--output", str(run), "--no-progress", "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(shard) in err and "corrupt row" in err
    assert not (run / "last.pt").exists()
