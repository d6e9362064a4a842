"""The packaged BlitzNet VOC recipe (train-seg-aug: train_aug.txt + SBD's SegmentationClassAug) runs
from any working directory on a small VOC tree built from voc2012_first100, and its SBD masks count."""
from __future__ import annotations

import numpy as np
from PIL import Image

from scaledet.config import load_config
from scaledet.engine.trainer import Trainer


def _sbd_tree(voc100, base):
    """VOCdevkit/VOC2012 with the images and XMLs of voc2012_first100; the training images' masks
    only in SegmentationClassAug (plain index PNGs, as SBD's), the val images' in SegmentationClass."""
    root = base / "VOCdevkit" / "VOC2012"
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    for folder in ("JPEGImages", "Annotations"):
        (root / folder).symlink_to(voc100 / folder)
    train = (voc100 / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[:4]
    val = (voc100 / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[:2]
    (root / "SegmentationClassAug").mkdir()
    (root / "SegmentationClass").mkdir()
    for name in train:
        Image.fromarray(np.array(Image.open(voc100 / "SegmentationClass" / f"{name}.png"))).save(
            root / "SegmentationClassAug" / f"{name}.png")
    for name in val:
        (root / "SegmentationClass" / f"{name}.png").symlink_to(voc100 / "SegmentationClass" / f"{name}.png")
    # two training images that have no mask anywhere: detection-only, all-ignore masks
    extra = [n for n in (voc100 / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[2:4]]
    (root / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("\n".join(train + extra) + "\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(val) + "\n")
    return train


def test_packaged_train_aug_recipe_runs_from_another_folder_with_sbd_masks(shared_data, tmp_path, monkeypatch):
    train = _sbd_tree(shared_data / "voc2012_first100", tmp_path / "data")
    monkeypatch.setenv("SCALEDET_DATA_ROOT", str(tmp_path / "data"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # the data section as shipped; only the model and the run are shrunk for a CPU test
    cfg = load_config("blitznet300_r50_voc", [
        "model.name=blitznet_tiny", "model.image_size=96", "model.args={x4: true}", "data.num_workers=0",
        "train.batch_size=2", "train.total_steps=2", "train.checkpoint_every=2", "train.eval_every=0",
        "eval.batch_size=2"])
    assert cfg.data.extra_masks_dir == "SegmentationClassAug" and cfg.train.amp == "none"
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    result = trainer.fit()
    dataset = trainer.bundle.train
    assert len(dataset) == 6 and dataset.num_masked == len(train) == 4
    assert all(str(dataset.mask_paths[i]).endswith(f"SegmentationClassAug/{name}.png") for i, name in enumerate(train))
    assert (tmp_path / "run" / "last.pt").is_file() and not (elsewhere / "run").exists()
    assert np.isfinite(result["final"]["mIoU"])
