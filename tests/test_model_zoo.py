"""docs/MODELS.md lists every registered model as tools/make_model_zoo.py would write it."""
import importlib.util
from pathlib import Path

import pytest

from scaledet.cli.main import main
from scaledet.config import load_config
from scaledet.models.zoo import ZOO
from scaledet.registry import list_models

REPO = Path(__file__).resolve().parents[1]
REGENERATE = "stale docs/MODELS.md: run python tools/make_model_zoo.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("make_model_zoo", REPO / "tools" / "make_model_zoo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def models_md(tool) -> str:
    return tool.MODELS_MD.read_text()


@pytest.fixture(scope="module")
def infos(tool) -> list[dict]:
    # every registered model built once on the meta device; multiply-adds are not recounted
    return tool.collect(count_mult_adds=False)


def test_models_md_is_current(tool, models_md, infos):
    reason = tool.stale_without_recounting(models_md, infos)
    assert reason is None, f"{REGENERATE} ({reason})"


def test_staleness_is_detected(tool, models_md, infos):
    lines = models_md.splitlines(keepends=True)
    row = next(i for i, line in enumerate(lines) if line.startswith("| `retinanet_spinenet49s`"))
    without_row = "".join(lines[:row] + lines[row + 1:])
    assert "no row for retinanet_spinenet49s" in tool.stale_without_recounting(without_row, infos)
    wrong_params = models_md.replace("| 11.94M (12.0M) |", "| 11.95M (12.0M) |")
    assert wrong_params != models_md and "11.94M" in tool.stale_without_recounting(wrong_params, infos)
    with pytest.raises(KeyError, match="scaledet/models/zoo.py"):
        tool.render([{"model": "retinanet_unlisted", "image_size": 64, "num_classes": 1, "params": 1, "macs": 1}])


def test_zoo_entries_name_registered_models_and_real_recipes_and_converters(capsys):
    assert set(ZOO) == set(list_models())
    for name, entry in ZOO.items():
        if entry.recipe:
            assert load_config(entry.recipe).model.name == name, entry.recipe
        if entry.convert:
            with pytest.raises(SystemExit) as exc:
                main(["convert", entry.convert, "--help"])
            assert exc.value.code == 0, entry.convert
            assert entry.release, f"{name}: say which release `scaledet convert {entry.convert}` reads"
    capsys.readouterr()
