"""Relative data paths resolve under data.root, and data.root under $SCALEDET_DATA_ROOT."""
from pathlib import Path

import pytest

from scaledet.config import load_config
from scaledet.data.factory import build_datasets
from scaledet.data.paths import DATA_ROOT_ENV, resolve_data_paths
from scaledet.data.synthetic import make_synthetic_coco

RELATIVE_COCO = ["data.format=coco", "data.train_images=train", "data.val_images=val",
                 "data.train_annotations=annotations/instances_train.json",
                 "data.val_annotations=annotations/instances_val.json"]


@pytest.fixture(scope="module")
def coco_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("paths") / "shapes"
    make_synthetic_coco(root, num_train=3, num_val=2, image_size=64, seed=1)
    return root


def test_relative_paths_resolve_under_data_root_from_another_folder(coco_folder, tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # nothing of the data set is here
    cfg = load_config(None, RELATIVE_COCO + [f"data.root={coco_folder}"])
    bundle = build_datasets(cfg.data)
    assert (len(bundle.train), len(bundle.val)) == (3, 2)
    assert bundle.val_annotations == coco_folder / "annotations" / "instances_val.json"


def test_environment_variable_is_the_base_of_a_relative_root(coco_folder, tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ROOT_ENV, str(coco_folder.parent))
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, RELATIVE_COCO + ["data.root=shapes"])
    bundle = build_datasets(cfg.data, train=False)
    assert bundle.train is None and len(bundle.val) == 2
    # an explicit absolute data.root wins over the environment
    resolved = resolve_data_paths(cfg.replace([f"data.root={coco_folder}"]).data,
                                  environ={DATA_ROOT_ENV: "/nowhere"})
    assert resolved.val_images == str(coco_folder / "val")


def test_missing_data_names_the_resolved_path_and_how(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "datasets"))
    cfg = load_config("retinanet_spinenet49s_coco")  # root: coco, train_images: train2017
    with pytest.raises(FileNotFoundError) as err:
        build_datasets(cfg.data)
    message = str(err.value)
    assert str(tmp_path / "datasets" / "coco" / "train2017") in message
    assert DATA_ROOT_ENV in message and "data.train_images" in message and len(message.splitlines()) == 1


def test_voc_split_files_resolve_under_root_but_split_names_do_not(tmp_path):
    cfg = load_config("blitznet300_r50_voc").data  # train_split: ImageSets/Segmentation/train_aug.txt
    resolved = resolve_data_paths(cfg, train=False, val=False, environ={DATA_ROOT_ENV: str(tmp_path)})
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    assert resolved.root == str(voc)
    assert resolved.train_split == str(voc / "ImageSets" / "Segmentation" / "train_aug.txt")
    assert resolved.val_split == "Segmentation/val"


def test_voc_split_file_is_read_under_root(shared_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, ["data.format=voc", f"data.root={shared_data / 'voc2012_first100'}",
                             "data.train_split=ImageSets/Segmentation/train.txt", "data.val_split=val"])
    bundle = build_datasets(cfg.data)
    assert len(bundle.train) == len((shared_data / "voc2012_first100/ImageSets/Segmentation/train.txt")
                                    .read_text().split())
    assert len(bundle.val) == 50


def test_synthetic_data_is_left_where_it_is_generated(monkeypatch):
    monkeypatch.setenv(DATA_ROOT_ENV, "/elsewhere")
    cfg = load_config(None, ["data.root=out/data"]).data
    assert resolve_data_paths(cfg) == cfg
