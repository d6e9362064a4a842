"""A narrow BlitzNet learns detection and segmentation together on real VOC images."""
from scaledet.config import load_config
from scaledet.engine.trainer import Trainer


def _config(voc_root, *extra):
    return load_config(None, [
        "model.name=blitznet_tiny", "model.num_classes=20", "model.image_size=128",
        "data.format=voc", f"data.root={voc_root}", "data.train_split=Segmentation/train",
        "data.val_split=Segmentation/train", "data.max_images=4", "eval.max_images=4", "data.augment=resize",
        "data.num_workers=0", "optim.optimizer=adam", "optim.lr=0.003", "optim.weight_decay=0.0",
        "optim.schedule=constant", "train.batch_size=4", "train.total_steps=60", "train.checkpoint_every=1000",
        "eval.metric=voc", "eval.batch_size=4", "train.keep_best=mIoU", *extra,
    ])


def test_both_losses_fall_and_miou_rises_on_four_voc_images(shared_data, tmp_path):
    voc = shared_data / "voc2012_first100"
    before = Trainer(_config(voc), tmp_path / "before", progress=False)
    before._setup()
    start = before.evaluate()
    trainer = Trainer(_config(voc), tmp_path / "run", progress=False)
    result = trainer.fit()
    end = result["final"]
    det = [r["det_cls_loss"] + r["det_loc_loss"] for r in trainer.history]
    seg = [r["seg_loss"] for r in trainer.history]
    assert sum(det[-5:]) / 5 < 0.5 * sum(det[:5]) / 5
    assert sum(seg[-5:]) / 5 < 0.5 * sum(seg[:5]) / 5
    assert end["mIoU"] > start["mIoU"] + 0.15, f"mIoU {start['mIoU']:.3f} -> {end['mIoU']:.3f}"


def test_blitznet_eval_and_predict_commands(shared_data, tmp_path, capsys):
    """`scaledet eval` prints mAP and mIoU for a BlitzNet config; `predict` writes boxes, overlay and mask."""
    import json

    import numpy as np
    from PIL import Image

    from scaledet.cli.main import main
    from scaledet.config import save_config

    voc = shared_data / "voc2012_first100"
    cfg = _config(voc, "train.total_steps=2")
    save_config(cfg, tmp_path / "blitz.yaml")
    Trainer(cfg, tmp_path / "run", progress=False).fit()
    assert main(["eval", str(tmp_path / "blitz.yaml"), "--checkpoint", str(tmp_path / "run" / "last.pt"),
                 "--json", "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= metrics["mAP"] <= 1.0 and 0.0 <= metrics["mIoU"] <= 1.0
    assert metrics["miou_method"] == "reference"  # the default, named in the output
    image = voc / "JPEGImages" / "2007_000032.jpg"
    assert main(["predict", "--checkpoint", str(tmp_path / "run" / "last.pt"), str(image),
                 "--output", str(tmp_path / "pred"), "--score-threshold", "0.0", "--device", "cpu"]) == 0
    mask = np.array(Image.open(tmp_path / "pred" / "2007_000032_mask.png"))
    assert mask.shape == Image.open(image).size[::-1] and mask.max() <= 20
    assert (tmp_path / "pred" / "2007_000032.png").exists()
    record = json.loads((tmp_path / "pred" / "detections.json").read_text())[0]
    assert record["mask"].endswith("2007_000032_mask.png") and record["detections"]
