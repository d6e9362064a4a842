"""A bad image is named: by --check-data before step 1, and from inside a data-loader worker."""
import hashlib
import shutil

import pytest

from scaledet.cli.main import main
from scaledet.config import save_config
from scaledet.engine.trainer import Trainer
from scaledet.errors import DataError


@pytest.fixture
def broken_copy(synthetic_root, tmp_path):
    """A copy of the synthetic images read as a COCO data set, one training image garbage."""
    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    bad = sorted((root / "train").iterdir())[5]
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    coco = ["data.format=coco", f"data.root={root}", "data.train_images=train",
            "data.train_annotations=annotations/instances_train.json", "data.val_images=val",
            "data.val_annotations=annotations/instances_val.json"]
    return coco, bad


def test_check_data_lists_the_bad_image_before_training(tiny_config, broken_copy, tmp_path):
    coco, bad = broken_copy
    before = hashlib.sha256(bad.read_bytes()).hexdigest()
    cfg = tiny_config(*coco)
    with pytest.raises(DataError, match=rf"--check-data: 1 of 24 training items cannot be read: .*{bad.name}"):
        Trainer(cfg, tmp_path / "run", progress=False, check_data=True).fit()
    assert not (tmp_path / "run" / "last.pt").exists() and not (tmp_path / "run" / "metrics.csv").exists()
    assert hashlib.sha256(bad.read_bytes()).hexdigest() == before


def test_worker_error_names_the_file(tiny_config, broken_copy, tmp_path, capsys):
    coco, bad = broken_copy
    cfg = tiny_config(*coco, "data.num_workers=1", "train.checkpoint_every=100")
    save_config(cfg, tmp_path / "cfg.yaml")
    assert main(["train", str(tmp_path / "cfg.yaml"), "--output", str(tmp_path / "run"), "--no-progress",
                 "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("scaledet train: error: ") and str(bad) in err and "in a data loader worker" in err
