"""Every config number and choice is checked when the config loads; the error names the key."""
import pytest

from scaledet.cli.main import main
from scaledet.config import ConfigError, check_model_arguments, load_config


@pytest.mark.parametrize("override, message", [
    ("train.checkpoint_every=0", "'train.checkpoint_every' must be > 0, got 0"),
    ("train.log_every=0", "'train.log_every' must be > 0"),
    ("train.accumulate=0", "'train.accumulate' must be > 0"),
    ("train.batch_size=0", "'train.batch_size' must be > 0"),
    ("train.total_steps=-5", "'train.total_steps' must be > 0, got -5"),
    ("optim.lr=0", "'optim.lr' must be > 0"),
    ("optim.lr=.nan", "'optim.lr' must be a finite number, got nan"),
    ("optim.lr=.inf", "'optim.lr' must be a finite number"),
    ("optim.decay_steps=[300, 100]", "'optim.decay_steps' must be positive and increasing"),
    ("model.num_classes=0", "'model.num_classes' must be > 0"),
    ("model.image_size=100000", "'model.image_size' must be > 0 and <= 4096, got 100000"),
    ("eval.batch_size=0", "'eval.batch_size' must be > 0"),
    ("eval.score_threshold=1.5", "'eval.score_threshold' must be >= 0 and <= 1"),
    ("train.ema_decay=2", "'train.ema_decay' must be >= 0 and <= 1"),
    ("data.scale_min=3", "'data.scale_max' (2.0) is below data.scale_min"),
    ("train.keep_best=bogus", "'train.keep_best' must be one of AP"),
])
def test_bad_values_fail_at_load_naming_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)


def test_model_argument_of_the_wrong_type_names_the_key():
    cfg = load_config(None, ["model.args.head_width=abc"])
    with pytest.raises(ConfigError, match="config key 'model.args.head_width' must be an integer, got 'abc'"):
        check_model_arguments(cfg.model)


def test_train_cli_refuses_before_creating_the_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "retinanet_spinenet49s_coco", "--output", str(out), "--set",
                 "model.args.head_width=abc"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.args.head_width" in err
    assert main(["train", "retinanet_spinenet49s_coco", "--output", str(out), "--set", "train.keep_best=bogus"]) == 1
    assert "train.keep_best" in capsys.readouterr().err
    assert not out.exists()
