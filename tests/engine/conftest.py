from pathlib import Path

import pytest

from scaledet.config import load_config
from scaledet.data.synthetic import make_synthetic_coco


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_coco(root, num_train=24, num_val=8, image_size=128, seed=3)
    return root


@pytest.fixture
def tiny_config(synthetic_root):
    def make(*overrides: str):
        base = [
            f"data.root={synthetic_root}", "data.synthetic_train=24", "data.synthetic_val=8",
            "data.synthetic_image_size=128", "data.num_workers=0", "model.image_size=128",
            "model.args={head_width: 32, endpoints_num_filters: 32}",
            "train.batch_size=4", "train.total_steps=6", "train.log_every=1", "train.checkpoint_every=3",
            "optim.lr=0.01", "optim.warmup_steps=2", "eval.batch_size=8",
        ]
        return load_config(None, base + list(overrides))

    return make
