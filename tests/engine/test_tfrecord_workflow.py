"""The SpineNet port's TFRecord workflow: train on train-* shards, evaluate the val-* shards against
data.val_annotations (the port's val_json_file) during and after training, and `scaledet eval`
on the same shards; the category table comes from the annotations, not from reading the shards."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from scaledet.cli.main import main
from scaledet.config import load_config, save_config
from scaledet.data import tfrecord
from scaledet.data.factory import build_datasets

pytestmark = pytest.mark.usefixtures("one_thread")
NUM_IMAGES = 4


@pytest.fixture(scope="module")
def shards(coco_tiny, tmp_path_factory) -> Path:
    """The first coco_tiny val images (all 80 categories kept) as val json + train/val shards."""
    root = tmp_path_factory.mktemp("tfrecord_run")
    data = json.loads((coco_tiny / "annotations" / "instances_val2017.json").read_text())
    images = data["images"][:NUM_IMAGES]
    ids = {img["id"] for img in images}
    subset = {**data, "images": images, "annotations": [a for a in data["annotations"] if a["image_id"] in ids]}
    (root / "val.json").write_text(json.dumps(subset))
    for split, count in (("train", 2), ("val", 2)):
        assert main(["convert-data", "coco-to-tfrecord", "--images", str(coco_tiny / "val2017"), "--annotations",
                     str(root / "val.json"), "--output", str(root / split), "--shards", str(count)]) == 0
    return root


def _config(root: Path, *extra: str) -> Path:
    cfg = load_config(None, [
        "data.format=tfrecord", f"data.root={root}", "data.train_pattern=train-*", "data.val_pattern=val-*",
        "data.val_annotations=val.json", "data.num_workers=0", "data.augment=resize",
        "model.name=retinanet_spinenet49_tiny", "model.image_size=128", "model.args={score_threshold: 0.0}",
        "train.batch_size=2", "train.total_steps=2", "train.eval_every=1", "train.checkpoint_every=2",
        "train.keep_best=AP", "eval.batch_size=2", "optim.warmup_steps=0", *extra])
    path = root / "config.yaml"
    save_config(cfg, path)
    return path


def test_categories_come_from_the_annotations_without_reading_the_shards(shards, monkeypatch):
    def no_scan(*args, **kwargs):
        raise AssertionError("the shards were read through for their category ids")

    monkeypatch.setattr(tfrecord.TFRecordDetection, "_scan", staticmethod(no_scan))
    cfg = load_config(_config(shards))
    bundle = build_datasets(cfg.data)
    coco = json.loads((shards / "val.json").read_text())
    assert bundle.label_to_category_id == sorted(c["id"] for c in coco["categories"])  # all 80, not only those seen
    assert len(bundle.class_names) == 80 and bundle.val_annotations == shards / "val.json"
    table = load_config(_config(shards, "data.val_annotations=null", "data.category_ids=[1, 3]",
                                "data.class_names=[person, car]")).data
    assert build_datasets(table, train=False).class_names == ["person", "car"]


def test_training_evaluates_the_val_shards_and_eval_scores_them(shards, tmp_path, capsys):
    config = _config(shards)
    run = tmp_path / "run"
    assert main(["train", str(config), "--output", str(run), "--no-progress", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "Average Precision (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in out
    assert (run / "best.pt").is_file() and (run / "val_results.json").is_file()
    # evaluated during training (step 1) and after it (step 2)
    rows = (run / "eval.csv").read_text().splitlines()
    assert rows[0].startswith("step,AP,AP50") and [r.split(",")[0] for r in rows[1:]] == ["1", "2"]
    code = main(["eval", str(config), "--checkpoint", str(run / "best.pt"), "--output", str(tmp_path / "eval"),
                 "--device", "cpu", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert 0.0 <= result["AP"] <= 1.0 and "AP50" in result
    detections = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert {d["image_id"] for d in detections} <= {img["id"] for img in json.loads(
        (shards / "val.json").read_text())["images"]}
