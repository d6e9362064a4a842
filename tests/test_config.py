"""Config validation happens when the config loads (choices, contradictions) or, for the model's
arguments, before the trainer reads any data. The data paths below do not exist: an error about
anything but the bad value would mean the data was looked at first."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scaledet.cli.main import main
from scaledet.config import ConfigError, load_config
from scaledet.engine.trainer import Trainer


def _write(tmp_path: Path, **sections) -> Path:
    missing = tmp_path / "no_such_data"
    raw = {"data": {"format": "coco", "train_images": str(missing / "train"),
                    "train_annotations": str(missing / "train.json"), "val_images": str(missing / "val"),
                    "val_annotations": str(missing / "val.json"), "num_workers": 0}}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("section, key, value, allowed", [
    ("train", "amp", "fp8", "none, bf16, fp16"),
    ("eval", "metric", "vocc", "coco, voc"),
    ("eval", "voc_metric", "11-point", "area, 11point"),
    ("eval", "image_filter", "non_crowd", "all, annotated_non_crowd"),
    ("optim", "optimizer", "sgdm", "sgd, adam, adamw"),
    ("optim", "schedule", "linear", "constant, step, cosine, multiphase_warmup_cosine, mindspore_nasfpn"),
    ("data", "augment", "mosaic", "scale_jitter, ssd, port_iou_crop, resize"),
    ("data", "format", "yolo", "synthetic, coco, voc, tfrecord, mindrecord"),
])
def test_bad_choice_fails_at_load_listing_the_allowed_values(tmp_path, capsys, section, key, value, allowed):
    path = _write(tmp_path, **{section: {key: value}})
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    message = str(excinfo.value)
    assert str(path) in message and f"{section}.{key}" in message and allowed in message and repr(value) in message
    # The CLI says the same in one line, and the run never starts (no output folder).
    assert main(["train", str(path), "--output", str(tmp_path / "run"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and allowed in err and "no_such_data" not in err
    assert not (tmp_path / "run").exists()


def test_bad_choice_in_an_override_lists_the_allowed_values():
    with pytest.raises(ConfigError, match=r"'train\.amp' must be one of none, bf16, fp16; got 'fp8'"):
        load_config(None, ["train.amp=fp8"])
    with pytest.raises(ConfigError, match="must be one of"):  # a YAML boolean is not the string "true"
        load_config(None, ["eval.metric=true"])


def test_contradicting_settings_fail_at_load(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.keep_best='mIoU'.*eval\.metric='coco'.*allowed: AP, AP50"):
        load_config(_write(tmp_path, train={"keep_best": "mIoU"}))
    with pytest.raises(ConfigError, match=r"keep_best='AP50'.*eval\.metric='voc'.*allowed: mAP, mIoU, pixel_acc"):
        load_config(_write(tmp_path, data={"format": "voc"}, eval={"metric": "voc"}))
    with pytest.raises(ConfigError, match=r"eval\.metric='voc'.*needs data\.format='voc'.*'coco'"):
        load_config(_write(tmp_path, eval={"metric": "voc"}, train={"keep_best": "mIoU"}))
    with pytest.raises(ConfigError, match=r"eval\.image_filter='annotated_non_crowd'.*needs eval\.metric='coco'"):
        load_config(_write(tmp_path, data={"format": "voc"}, eval={"metric": "voc", "image_filter": "annotated_non_crowd"},
                           train={"keep_best": "mIoU"}))
    # Overrides are applied together, so switching the metric and keep_best at once is fine.
    cfg = load_config(_write(tmp_path), ["data.format=voc", "eval.metric=voc", "train.keep_best=mIoU"])
    assert (cfg.eval.metric, cfg.train.keep_best) == ("voc", "mIoU")


@pytest.mark.parametrize("model, expected", [
    ({"name": "retinanet_spinenet49_tiny", "args": {"head_widht": 32}},
     r"model\.args\.head_widht.*retinanet_spinenet49_tiny takes: .*head_width"),
    ({"name": "retinanet_spinenet50"}, r"model\.name: unknown model 'retinanet_spinenet50'.*retinanet_spinenet49s"),
])
def test_bad_model_fails_before_any_data_is_read(tmp_path, capsys, model, expected):
    path = _write(tmp_path, model=model)
    cfg = load_config(path)  # the registry is not consulted while loading
    with pytest.raises(ConfigError, match=expected):
        Trainer(cfg, tmp_path / "run", device="cpu", progress=False).fit()
    assert main(["train", str(path), "--output", str(tmp_path / "run"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no_such_data" not in err


def test_config_choices_are_the_ones_the_code_implements():
    """A choice added to the code but not to the config's Literal (or the reverse) fails here."""
    from typing import get_args, get_type_hints

    from scaledet.config import DataConfig, EvalConfig, OptimConfig, TrainConfig
    from scaledet.data.factory import FORMATS
    from scaledet.engine.schedules import SCHEDULES
    from scaledet.engine.trainer import AMP_DTYPES
    from scaledet.eval.image_filters import IMAGE_FILTERS
    from scaledet.eval.voc import VOC_METRICS

    def choices(cls, name):
        return set(get_args(get_type_hints(cls)[name]))

    assert choices(DataConfig, "format") == set(FORMATS)
    assert choices(OptimConfig, "schedule") == set(SCHEDULES)
    assert choices(TrainConfig, "amp") == set(AMP_DTYPES)
    assert choices(EvalConfig, "voc_metric") == set(VOC_METRICS)
    assert choices(EvalConfig, "image_filter") == set(IMAGE_FILTERS)
