"""Overfitting works on real photos: a few dozen steps on 4 COCO images halve the loss."""
from scaledet.config import load_config
from scaledet.engine.trainer import Trainer


def test_loss_halves_on_four_real_coco_images(shared_data, tmp_path):
    coco = shared_data / "coco_tiny"
    cfg = load_config(None, [
        "data.format=coco", f"data.train_images={coco / 'train2017'}",
        f"data.train_annotations={coco / 'annotations' / 'instances_train2017.json'}",
        f"data.val_images={coco / 'train2017'}",
        f"data.val_annotations={coco / 'annotations' / 'instances_train2017.json'}",
        "data.max_images=4", "data.scale_min=1.0", "data.scale_max=1.0", "data.hflip=0.0", "data.num_workers=0",
        "model.image_size=256", "model.args={head_width: 48, endpoints_num_filters: 48}",
        "optim.optimizer=adamw", "optim.lr=0.003", "optim.weight_decay=0.0", "optim.schedule=constant",
        "optim.warmup_steps=5", "optim.grad_clip=10.0",
        "train.batch_size=4", "train.total_steps=40", "train.checkpoint_every=1000", "train.log_every=10",
    ])
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    trainer.evaluate = lambda: None  # only the training signal is under test here
    trainer.fit()
    losses = [r["loss"] for r in trainer.history]
    first = sum(losses[:3]) / 3
    last = sum(losses[-3:]) / 3
    assert last <= 0.5 * first, f"loss went from {first:.3f} to {last:.3f}"
