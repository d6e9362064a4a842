"""``scaledet convert tf-retinanet`` end to end: the converted checkpoint alone (no flags) computes
what TensorFlow computed for each fixture, and goes through eval, predict and export; bad input is
one line naming the file and variable, with nothing written."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from scaledet.cli.main import main
from scaledet.convert.tf_mapping import check_mapping
from scaledet.convert.tf_parity import PARITY_FIXTURES, measure
from scaledet.convert.tf_retinanet import ignored_variables, plan_conversion

from _parts import parse_shape, read_listing

REPO = Path(__file__).resolve().parents[2]
FIXTURES = {f.name: f for f in PARITY_FIXTURES}
GARDEN_SPINENET = FIXTURES["tf2_spinenet49s_narrow"]
# TF's and our float32 scores differ by a few 1e-6 (the issue: ranks tie within 4e-6); boxes by
# float32 rounding of the decode at 128-256 px.
SCORE_TOLERANCE, TIE, BOX_TOLERANCE = 2e-4, 4e-6, 0.05
# Model Garden's and scaledet's float32 runs each carry up to ~4e-4 of rounding noise on these
# narrow random networks (tests/fixtures/tf2_model_garden/README.md); the float64 runs are held to 1e-4.
FLOAT32_TOLERANCE = 5e-4

pytestmark = pytest.mark.usefixtures("one_thread")


def _convert(capsys, fixture, output: Path, shared: Path, *extra: str) -> tuple[int, str]:
    argv = ["convert", "tf-retinanet", fixture.path(fixture.checkpoint, shared=shared, repo=REPO), str(output),
            "--model", fixture.model, "--layout", fixture.layout, *extra]
    argv += [a for key, value in fixture.model_args.items() for a in ("--arg", f"{key}={value}")]
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.fixture
def shared(request, name) -> Path:
    """The shared data folder, only required by the tpu fixture (it lives there)."""
    if FIXTURES[name].layout == "tpu":
        return request.getfixturevalue("shared_data")
    return REPO / "missing-shared-data"


@pytest.mark.parametrize("name", list(FIXTURES))
def test_converted_checkpoint_computes_what_tensorflow_computed(name, shared, tmp_path, capsys):
    fixture = FIXTURES[name]
    out = tmp_path / "converted.pt"
    code, err = _convert(capsys, fixture, out, shared, "--classes", "all")
    assert code == 0, err
    record = torch.load(out, weights_only=True)
    report = measure(fixture, out, shared=shared, repo=REPO, score_tolerance=SCORE_TOLERANCE)
    # class and box outputs of levels 3..7, within the tolerance (float64 for Model Garden)
    assert len(report.checked) == 10
    assert max(report.checked.values()) <= fixture.tolerance, report.differences
    assert max(report.differences["float32"].values()) <= FLOAT32_TOLERANCE, report.differences
    for match in report.matches:
        assert match.equal_as_sets(TIE), match
        assert match.pairs >= 4 and match.max_box_difference <= BOX_TOLERANCE, match
    # the TF code's arithmetic travels with the checkpoint
    args = record["model_args"]
    if fixture.layout == "tpu":
        assert (args["pool_padding"], args["downsample_pools"], args["box_pixel_offset"]) == ("same", "one", 1.0)
        assert args["norm"] == {"momentum": pytest.approx(0.003), "eps": 1e-4}
    assert record["label_to_category_id"] == list(range(1, args["num_classes"] + 1))


def test_without_the_legacy_box_convention_the_tpu_detections_differ(shared_data, tmp_path, capsys):
    """The detection check can fail: TF's +1 box convention moves boxes by about a pixel."""
    fixture = FIXTURES["tpu_spinenet49s_narrow"]
    out = tmp_path / "converted.pt"
    assert _convert(capsys, fixture, out, shared_data, "--classes", "all", "--arg", "box_pixel_offset=0")[0] == 0
    fixture = replace(fixture, outputs={"float32": fixture.outputs["float32"]})
    report = measure(fixture, out, shared=shared_data, repo=REPO, score_tolerance=SCORE_TOLERANCE)
    assert max(m.max_box_difference for m in report.matches) > 0.4


def test_converted_tpu_checkpoint_exports_and_passes_the_onnx_check(shared_data, tmp_path, capsys):
    """The random-weight tpu fixture predicts size deltas near the clamp, where float32 rounding of
    the decoded boxes reaches a few 1e-3 px: the export check allows for the coordinates' size."""
    out = tmp_path / "tpu.pt"
    assert _convert(capsys, FIXTURES["tpu_spinenet49s_narrow"], out, shared_data)[0] == 0
    assert main(["export", "--checkpoint", str(out), "--output", str(tmp_path / "tpu.onnx")]) == 0
    assert "checked against PyTorch" in capsys.readouterr().out


def test_converted_checkpoint_runs_eval_predict_and_export_without_flags(coco_tiny, tmp_path, capsys):
    out = tmp_path / "garden.pt"
    assert _convert(capsys, GARDEN_SPINENET, out, REPO)[0] == 0  # default --classes coco80: ids 1..10 here
    code = main(["eval", "retinanet_spinenet49s_coco", "--checkpoint", str(out), "--output", str(tmp_path / "eval"),
                 "--set", f"data.root={coco_tiny}", "--set", "data.num_workers=0", "--set", "eval.max_images=2",
                 "--set", "eval.batch_size=2", "--device", "cpu", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert {"AP", "AP50"} <= set(json.loads(captured.out.strip().splitlines()[-1]))
    images = tmp_path / "images"
    images.mkdir()
    for source in sorted((coco_tiny / "val2017").glob("*.jpg"))[:2]:
        shutil.copy(source, images)
    assert main(["predict", "--checkpoint", str(out), str(images), "--output", str(tmp_path / "pred"),
                 "--device", "cpu", "--score-threshold", "0.05"]) == 0
    records = json.loads((tmp_path / "pred" / "detections.json").read_text())
    assert len(records) == 2 and any(r["detections"] for r in records)
    names = {d["class_name"] for r in records for d in r["detections"]}
    assert names <= {"person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
                     "traffic light"}
    code = main(["export", "--checkpoint", str(out), "--output", str(tmp_path / "m.onnx")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "checked against PyTorch" in captured.out


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("scaledet convert: error:"), err
    return lines[0]


def test_truncated_checkpoint_names_file_and_variable(tmp_path, capsys):
    source = REPO / "tests" / "fixtures" / "tf2_model_garden" / "spinenet" / "ckpt"
    broken = tmp_path / "ckpt"
    shutil.copytree(source, broken)
    data = next(broken.glob("*.data-*"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    fixture = replace(GARDEN_SPINENET, checkpoint=str(broken))
    out = tmp_path / "out.pt"
    code, err = _convert(capsys, fixture, out, REPO)
    line = _one_line(err)
    assert code == 1 and data.name in line and "truncated" in line and "variable" in line
    assert not out.exists() and not list(tmp_path.glob(".out.pt.*"))


def test_checkpoint_of_another_model_lists_the_variables(tmp_path, capsys):
    nasfpn = FIXTURES["tf2_nasfpn_r50_narrow"]
    fixture = replace(GARDEN_SPINENET, checkpoint=nasfpn.checkpoint)
    out = tmp_path / "out.pt"
    code, err = _convert(capsys, fixture, out, REPO)
    line = _one_line(err)
    assert code == 1 and "ckpt-1: " in line and "does not match the model" in line
    assert "layers where the model needs" in line
    assert not out.exists()


def test_missing_variables_are_listed(shared_data, tmp_path, capsys):
    """A model with a fifth head conv needs variables the tpu checkpoint does not hold."""
    out = tmp_path / "out.pt"
    code, err = _convert(capsys, FIXTURES["tpu_spinenet49s_narrow"], out, shared_data, "--arg", "head_convs=5")
    line = _one_line(err)
    assert code == 1 and "model.ckpt: does not match the model" in line
    assert "expected variables missing from the checkpoint: retinanet/box_net/box-4-3/beta" in line
    assert not out.exists()


def test_wrong_layout_or_model_is_refused(tmp_path, capsys):
    out = tmp_path / "out.pt"
    code, err = _convert(capsys, FIXTURES["tf2_nasfpn_r50_narrow"], out, REPO)
    assert code == 0, err
    code = main(["convert", "tf-retinanet", str(REPO / "tests/fixtures/tf2_model_garden/nasfpn/ckpt"),
                 str(tmp_path / "x.pt"), "--model", "retinanet_nasfpn_r50", "--layout", "tpu"])
    assert code == 1 and "--layout tpu holds spinenet RetinaNets only" in _one_line(capsys.readouterr().err)
    code = main(["convert", "tf-retinanet", str(REPO / "tests/fixtures/tf2_model_garden/nasfpn/ckpt"), str(out),
                 "--model", "retinanet_nasfpn_r50", "--layout", "tf2"])
    assert code == 1 and "already exists" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "x.pt").exists()
    code = main(["convert", "tf-retinanet", str(REPO / "tests/fixtures/tf2_model_garden/spinenet/ckpt"),
                 str(tmp_path / "x.pt"), "--model", "retinanet_spinenet49s", "--layout", "tpu"])
    assert code == 1 and "is it a --layout tf2 checkpoint?" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "x.pt").exists()


def test_training_from_a_converted_checkpoint_keeps_its_arithmetic(tmp_path, capsys):
    """model.init_checkpoint brings the TF options and widths recorded in a converted checkpoint."""
    from scaledet.config import load_config
    from scaledet.engine.trainer import build_model_from_config, model_record, with_init_checkpoint_arguments

    out = tmp_path / "garden.pt"
    assert _convert(capsys, GARDEN_SPINENET, out, REPO)[0] == 0
    cfg = load_config("retinanet_spinenet49s_coco", [f"model.init_checkpoint={out}", "model.image_size=128",
                                                     "model.args.drop_connect_rate=0.0"])
    cfg = with_init_checkpoint_arguments(cfg)
    args = cfg.model.args
    assert (args["conv_padding"], args["downsample_pools"], args["filter_size_scale"]) == ("same", "repeated", 0.08)
    # the recipe's training arguments stay; the widths are the checkpoint's (the recipe says 256 and 128)
    assert args["drop_connect_rate"] == 0.0 and args["focal_gamma"] == 1.5
    assert (args["endpoints_num_filters"], args["head_width"]) == (16, 16)
    model = build_model_from_config(cfg, 10)
    expected = torch.load(out, weights_only=True)["model"]
    assert all(torch.equal(value, expected[key]) for key, value in model.state_dict().items())
    assert model_record(cfg, model)["model_args"]["pool_padding"] == "same"


FULL_SIZE = [  # (layout, variable list, model): every full-size model the two codes define
    *(("tpu", f"spinenet_tpu_ref/varlists/spinenet{v}_retinanet.tsv", f"retinanet_spinenet{v.lower()}")
      for v in ("49S", "49", "96", "143", "190")),
    *(("tf2", f"spinenet{v}.tsv.gz", f"retinanet_spinenet{v.lower()}") for v in ("49S", "49", "96", "143", "190")),
    ("tf2", "nasfpn_r50_7x256.tsv.gz", "retinanet_nasfpn_r50"),
]


@pytest.mark.parametrize("layout, listing, model_name", FULL_SIZE)
def test_every_full_size_variable_list_converts_without_arguments(layout, listing, model_name, request):
    """The converter's own plan (widths read from the shapes, layout options, coco80 classes) maps
    every variable of each full-size list, with nothing left over; weights are not needed."""
    if layout == "tpu":
        path = request.getfixturevalue("shared_data") / listing
    else:
        path = REPO / "tests" / "fixtures" / "tf2_model_garden" / "varlists" / listing
    rows = read_listing(path)
    shapes = {r[0]: parse_shape(r[1]) for r in rows}
    names = {r[0]: r[3] for r in rows} if layout == "tf2" else {}
    with torch.device("meta"):
        plan = plan_conversion(shapes, names, model_name, layout, source=listing)
    state = {k: tuple(v.shape) for k, v in plan.model.state_dict().items()}
    check_mapping(plan.mapping, shapes, state, source=listing, ignored=ignored_variables(layout, shapes))
    assert plan.model.num_classes == 80 and len(plan.class_channels) == 80
    assert {a.key for a in plan.mapping.values()} == {k for k in state if not k.endswith("num_batches_tracked")}
