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
