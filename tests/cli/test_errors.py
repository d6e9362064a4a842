"""The CLI's error boundary (user errors are one line, anything else is a bug with its traceback),
and what training records in its checkpoints."""
from __future__ import annotations

import pytest
import torch

import scaledet
from scaledet.cli import info
from scaledet.cli.main import main
from scaledet.engine.inference import model_from_checkpoint
from scaledet.errors import DataError


def _fail_with(monkeypatch, error: BaseException) -> None:
    def describe(*args, **kwargs):
        raise error

    monkeypatch.setattr(info, "describe", describe)


@pytest.mark.parametrize("error", [DataError("a.json: not valid JSON (line 3)\nmore detail"),
                                   PermissionError(13, "Permission denied", "out/a.png")])
def test_user_errors_print_one_line(monkeypatch, capsys, error):
    _fail_with(monkeypatch, error)
    assert main(["info", "retinanet_spinenet49_tiny"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("scaledet info: error: ")
    assert ("a.json: not valid JSON" in err) or ("out/a.png" in err)
    assert "Traceback" not in err


def test_a_bug_prints_the_traceback_and_asks_for_a_report(monkeypatch, capsys):
    _fail_with(monkeypatch, ZeroDivisionError("division by zero"))
    assert main(["info", "retinanet_spinenet49_tiny"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("Traceback") and any("describe" in line for line in err)
    assert err[-1].startswith("scaledet info: internal error (ZeroDivisionError: division by zero)")
    assert "bug in scaledet " + scaledet.__version__ in err[-1] and "report" in err[-1]


@pytest.mark.parametrize("argv", [["--debug", "info", "retinanet_spinenet49_tiny"],
                                  ["info", "retinanet_spinenet49_tiny", "--debug"]])
def test_debug_re_raises_user_errors_too(monkeypatch, argv):
    _fail_with(monkeypatch, DataError("bad file"))
    with pytest.raises(DataError, match="bad file"):
        main(argv)


def test_training_checkpoints_record_the_input_spec_and_label_map(trained_run):
    state = torch.load(trained_run["checkpoint"], weights_only=True)
    model = model_from_checkpoint(trained_run["checkpoint"])
    assert state["input_spec"] == model.input_spec.to_dict() and state["input_spec"]["image_size"] == 128
    assert state["input_spec"]["resize_mode"] == "long_side" and state["input_spec"]["size_divisor"] == 128
    assert model.label_to_category_id == state["label_to_category_id"] and len(model.label_to_category_id) == 5
    assert model.class_names == state["class_names"] == ["circle", "square", "triangle", "cross", "star"]
