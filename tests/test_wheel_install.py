"""Acceptance: a non-editable install of the wheel runs a packaged recipe from another folder.

Builds the wheel from a copy of the source, installs it with --no-deps into a fresh virtualenv
that sees the system's torch & co. (--system-site-packages), then, from an unrelated folder,
runs `scaledet configs` and `scaledet train <packaged name>` for two steps on coco_tiny.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # builds a wheel and a virtualenv, then trains in a fresh process


def _run(args: list, cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_wheel_installs_and_trains_a_packaged_recipe(shared_data, tmp_path):
    # A copy of the source, so building never writes build/ or *.egg-info into the checkout.
    source = tmp_path / "source"
    shutil.copytree(REPO / "scaledet", source / "scaledet", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", source,
          "-w", tmp_path / "wheels"], cwd=tmp_path)
    wheel, = (tmp_path / "wheels").glob("scaledet-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], cwd=tmp_path)
    python, scaledet = venv / "bin" / "python", venv / "bin" / "scaledet"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SCALEDET_DATA_ROOT")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    # pip comes from the system site-packages; run by the venv's python it installs into the venv.
    # --ignore-installed: an editable scaledet of the same version may be installed system-wide.
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", wheel], cwd=tmp_path, env=env)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    packaged = json.loads(_run([scaledet, "configs", "--json"], cwd=elsewhere, env=env).stdout)
    assert {"retinanet_spinenet49s_coco", "blitznet300_r50_voc"} <= {recipe["name"] for recipe in packaged}
    for recipe in packaged:  # read from the scaledet installed in the venv, not from a checkout
        assert recipe["description"] and Path(recipe["path"]).is_relative_to(venv / "lib"), recipe["path"]

    coco_tiny = shared_data / "coco_tiny"
    train = _run([scaledet, "train", "retinanet_spinenet49s_coco", "--output", "runs/x", "--device", "cpu",
                  "--no-progress",
                  # the recipe's relative paths (train2017, annotations/...) are taken under data.root
                  "--set", f"data.root={coco_tiny}", "--set", "data.num_workers=0", "--set", "data.max_images=4",
                  "--set", "model.name=retinanet_spinenet49_tiny", "--set", "model.image_size=128",
                  "--set", "model.args.endpoints_num_filters=32", "--set", "model.args.head_width=32",
                  "--set", "train.batch_size=2", "--set", "train.total_steps=2", "--set", "train.amp=none",
                  "--set", "train.sync_bn=false", "--set", "train.checkpoint_every=2",
                  "--set", "eval.batch_size=2", "--set", "eval.max_images=4"], cwd=elsewhere, env=env)
    summary = json.loads(train.stdout.strip().splitlines()[-1])
    assert summary["step"] == 2
    run_dir = elsewhere / "runs" / "x"
    assert (elsewhere / summary["output_dir"]).resolve() == run_dir.resolve()  # relative to where it ran
    assert (run_dir / "last.pt").stat().st_size > 0
    assert (run_dir / "curves.png").stat().st_size > 0  # the installed package draws its plots (matplotlib, Agg)
    assert "AP" in train.stdout  # the final COCO evaluation table was printed
