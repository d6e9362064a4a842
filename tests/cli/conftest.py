from pathlib import Path

import pytest

from scaledet.config import load_config, save_config
from scaledet.data.synthetic import make_synthetic_coco
from scaledet.engine.trainer import Trainer


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A tiny model trained for a few steps: its config, checkpoint and data."""
    root = tmp_path_factory.mktemp("cli")
    make_synthetic_coco(root / "data", num_train=8, num_val=4, image_size=128, seed=5)
    cfg = load_config(None, [
        f"data.root={root / 'data'}", "data.synthetic_train=8", "data.synthetic_val=4",
        "data.synthetic_image_size=128", "data.num_workers=0", "model.image_size=128",
        "model.args={head_width: 32, endpoints_num_filters: 32, score_threshold: 0.0}",
        "train.batch_size=4", "train.total_steps=2", "train.checkpoint_every=2", "eval.batch_size=4",
    ])
    save_config(cfg, root / "config.yaml")
    Trainer(cfg, root / "run", progress=False).fit()
    return {"root": root, "config": root / "config.yaml", "checkpoint": root / "run" / "last.pt",
            "val_images": root / "data" / "val"}
