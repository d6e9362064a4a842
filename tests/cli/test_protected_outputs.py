"""Commands never lose what the user has: export, convert-data and predict refuse to replace
files unless asked, write atomically, and a failure or a full disk leaves the previous file."""
import errno
import hashlib
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from scaledet.cli.main import main


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def digests(folder):
    return {p.name: digest(p) for p in sorted(folder.iterdir()) if p.is_file()}


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


# -- export ----------------------------------------------------------------------------------
EXPORT = ["export", "--model", "retinanet_spinenet49_tiny", "--num-classes", "3", "--image-size", "128"]


def test_export_keeps_the_previous_onnx_on_refusal_failed_check_and_full_disk(tmp_path, monkeypatch, capsys):
    import onnx

    import scaledet.export.onnx as export_module

    out = tmp_path / "model.onnx"
    out.write_bytes(b"the user's previous, good model")
    before = digest(out)
    # 1. an existing file needs --overwrite
    assert main(EXPORT + ["--output", str(out)]) == 1
    assert "already exists" in capsys.readouterr().err
    # 2. a failed verification must not delete (or replace) it
    monkeypatch.setattr(export_module, "compare_detections", lambda *a, **k: "forced difference")
    assert main(EXPORT + ["--output", str(out), "--overwrite"]) == 1
    assert "disagrees with PyTorch at batch 1: forced difference" in capsys.readouterr().err
    monkeypatch.undo()
    # 3. the disk fills while the graph is written
    def partial_then_full(proto, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"\x08\x07 truncated")
        _disk_full()

    monkeypatch.setattr(onnx, "save", partial_then_full)
    assert main(EXPORT + ["--output", str(out), "--overwrite"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"no space left on device at {out}; the previous file there, if any, is unchanged")
    assert len(err.splitlines()) == 1
    assert digest(out) == before and [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


# -- convert-data ------------------------------------------------------------------------------
@pytest.fixture
def six_coco_images(coco_tiny, tmp_path):
    """The first 6 coco_tiny training images with their annotations (a real, small COCO json)."""
    data = json.loads((coco_tiny / "annotations" / "instances_train2017.json").read_text())
    keep = {im["id"] for im in data["images"][:6]}
    data["images"] = data["images"][:6]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    path = tmp_path / "six.json"
    path.write_text(json.dumps(data))
    return coco_tiny / "train2017", path


def test_convert_data_full_disk_leaves_no_complete_looking_shard_and_keeps_old_ones(six_coco_images, tmp_path,
                                                                                  monkeypatch, capsys):
    from tfrecord.writer import TFRecordWriter

    images, annotations = six_coco_images
    out = tmp_path / "shards"
    out.mkdir()
    args = ["convert-data", "coco-to-tfrecord", "--images", str(images), "--annotations", str(annotations),
            "--output", str(out / "train"), "--shards", "2"]
    assert main(args) == 0
    before = digests(out)
    assert sorted(before) == ["train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
    assert main(args) == 1  # shards exist: not replaced without --overwrite
    assert "already exist" in capsys.readouterr().err and digests(out) == before

    calls = {"n": 0}
    write = TFRecordWriter.write

    def fill_up(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            _disk_full()
        return write(self, *a, **k)

    monkeypatch.setattr(TFRecordWriter, "write", fill_up)
    assert main(args[:-1] + ["3", "--overwrite"]) == 1
    assert "no space left on device at" in capsys.readouterr().err
    assert digests(out) == before  # no new shard under a final name, the old ones intact
    assert [p.name for p in out.iterdir() if "of-00003" in p.name] == []


# -- predict -------------------------------------------------------------------------------------
@pytest.fixture
def user_folder(trained_run, tmp_path):
    """A user's folder: a.jpg and a.png (same stem), b.png, and one broken 'c.jpg'."""
    folder = tmp_path / "photos"
    folder.mkdir()
    source = sorted(trained_run["val_images"].iterdir())
    Image.open(source[0]).convert("RGB").save(folder / "a.jpg")
    Image.open(source[1]).convert("RGB").save(folder / "a.png")
    Image.open(source[2]).convert("RGB").save(folder / "b.png")
    (folder / "c.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return folder


def _predict(trained_run, inputs, output, *extra):
    return main(["predict", "--checkpoint", str(trained_run["checkpoint"]), *map(str, inputs), "--output",
                 str(output), "--score-threshold", "0.0", "--device", "cpu", *extra])


def test_predict_never_writes_over_inputs_or_existing_files(trained_run, user_folder, tmp_path, capsys):
    before = digests(user_folder)
    # --output is the input folder: the drawing a.png would replace the user's a.png
    assert _predict(trained_run, [user_folder / "a.jpg", user_folder / "a.png"], user_folder) == 1
    assert "is one of the input images" in capsys.readouterr().err
    assert _predict(trained_run, [user_folder / "a.jpg", user_folder / "a.png"], user_folder, "--overwrite") == 1
    assert "a.png: is one of the input images" in capsys.readouterr().err  # not even with --overwrite
    assert _predict(trained_run, [user_folder / "a.jpg"], user_folder) == 1  # a.png is not an input, but exists
    assert "a.png: file already exists" in capsys.readouterr().err
    assert digests(user_folder) == before
    # an existing output file is kept unless --overwrite
    out = tmp_path / "out"
    out.mkdir()
    (out / "detections.json").write_text("my notes")
    assert _predict(trained_run, [user_folder / "b.png"], out) == 1
    assert "detections.json: file already exists" in capsys.readouterr().err
    assert (out / "detections.json").read_text() == "my notes"


def test_predict_names_drawings_uniquely_and_reports_a_failing_image(trained_run, user_folder, tmp_path, capsys):
    before = digests(user_folder)
    out = tmp_path / "pred"
    assert _predict(trained_run, [user_folder], out) == 1  # c.jpg is broken: exit 1, the rest written
    err = capsys.readouterr().err
    assert "c.jpg" in err and "1 of 4 images could not be used" in err
    records = json.loads((out / "detections.json").read_text())
    assert [r["image"].rsplit("/", 1)[1] for r in records] == ["a.jpg", "a.png", "b.png", "c.jpg"]
    assert [sorted(r) for r in records[:3]] == [["detections", "drawing", "image"]] * 3
    assert records[3]["detections"] == [] and "c.jpg" in records[3]["error"]
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "a_2.png", "b.png"]
    drawings = [np.asarray(Image.open(out / n)) for n in ("a.png", "a_2.png")]
    assert drawings[0].shape == drawings[1].shape  # both kept, one per input
    assert digests(user_folder) == before


def test_nan_score_threshold_is_a_usage_error(tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert main(EXPORT + ["--output", str(out), "--score-threshold", "nan"]) == 1
    assert "--score-threshold must be a finite number, got nan" in capsys.readouterr().err
    image = tmp_path / "a.png"
    Image.new("RGB", (64, 64)).save(image)
    assert main(["predict", "--checkpoint", str(tmp_path / "x.pt"), str(image), "--output", str(tmp_path / "p"),
                 "--score-threshold", "nan"]) == 1
    assert "--score-threshold must be a finite number" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
