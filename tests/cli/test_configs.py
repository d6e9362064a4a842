"""Packaged recipes: listed with a description, loadable by name, each builds its model."""
import pytest
import torch

from scaledet.cli.main import main
from scaledet.config import ConfigError, load_config
from scaledet.configs import list_configs, resolve_config
from scaledet.registry import create_model

EXPECTED = {"retinanet_spinenet49s_coco", "retinanet_nasfpn_r50_coco", "blitznet300_r50_voc"}


def test_every_packaged_recipe_loads_strictly_and_builds_its_model():
    configs = list_configs()
    assert EXPECTED <= {c.name for c in configs}
    for packaged in configs:
        assert packaged.description and "\n" not in packaged.description, packaged.name
        cfg = load_config(packaged.name)
        assert cfg == load_config(packaged.path)
        with torch.device("meta"):
            model = create_model(cfg.model.name, num_classes=cfg.model.num_classes or 80,
                                 image_size=cfg.model.image_size, **cfg.model.args)
        assert model.default_image_size == cfg.model.image_size, packaged.name


def test_a_file_wins_over_a_packaged_name_and_unknown_names_list_the_packaged(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_config("retinanet_spinenet49s_coco.yaml").parent.name == "configs"
    (tmp_path / "retinanet_spinenet49s_coco.yaml").write_text("train: {total_steps: 7}\n")
    assert resolve_config("retinanet_spinenet49s_coco.yaml").resolve() == tmp_path / "retinanet_spinenet49s_coco.yaml"
    assert load_config("retinanet_spinenet49s_coco.yaml").train.total_steps == 7
    assert load_config("retinanet_spinenet49s_coco").train.total_steps == 231_500  # the packaged one
    with pytest.raises(ConfigError, match="retinanet_spinenet49s_coco.*scaledet configs"):
        load_config("retinanet_spinenet50_coco")


def test_configs_command_lists_and_prints(capsys, tmp_path):
    assert main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for packaged in list_configs():
        assert any(line.startswith(packaged.name) and packaged.description in line for line in lines)
    assert main(["configs", "blitznet300_r50_voc"]) == 0
    copy = tmp_path / "mine.yaml"
    copy.write_text(capsys.readouterr().out)
    assert load_config(copy) == load_config("blitznet300_r50_voc")
    assert main(["configs", "nope"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "blitznet300_r50_voc" in err
