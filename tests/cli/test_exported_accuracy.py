"""Acceptance (issue 16): the accuracy of an exported model, and COCO-format predictions.

``scaledet eval --checkpoint X --onnx Y`` runs both through the one evaluation loop and the
same metric; ``scaledet predict --format coco`` then ``scaledet eval-results coco`` reproduces
what ``scaledet eval`` prints."""
import json
import shutil

import pytest

from scaledet.cli.main import main
from scaledet.eval.plots import PR_SIZE, per_class_ap_height

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def exported(scored_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    assert main(["export", "--checkpoint", str(scored_run["checkpoint"]), "--output", str(path),
                 "--image-size", "128", "--no-verify"]) == 0
    return path


def test_onnx_and_pytorch_ap_agree_on_the_same_data_and_metric(scored_run, exported, tmp_path, capsys):
    capsys.readouterr()
    assert main(["eval", str(scored_run["config"]), "--checkpoint", str(scored_run["checkpoint"]),
                 "--onnx", str(exported), "--output", str(tmp_path), "--device", "cpu", "--json"]) == 0
    both = json.loads(capsys.readouterr().out)
    torch_ap, onnx_ap = both["checkpoint"]["AP"], both["onnx"]["AP"]
    print(f"\nAP PyTorch {torch_ap:.6f}, ONNX Runtime {onnx_ap:.6f}")
    assert 0.1 < torch_ap < 0.95, torch_ap  # a score the agreement can be measured on
    assert abs(onnx_ap - torch_ap) <= 0.002, (onnx_ap, torch_ap)
    assert abs(both["onnx"]["AP50"] - both["checkpoint"]["AP50"]) <= 0.002
    onnx_results = json.loads((tmp_path / "results_onnx.json").read_text())
    assert onnx_results and {"image_id", "category_id", "bbox", "score"} <= set(onnx_results[0])


def test_onnx_eval_alone_prints_its_table_and_draws_its_plots(scored_run, exported, tmp_path, capsys, assert_png):
    capsys.readouterr()
    assert main(["eval", str(scored_run["config"]), "--onnx", str(exported), "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Average Precision" in out and str(tmp_path / "results_onnx.json") in out
    for plot, size in (("pr_curves_onnx.png", PR_SIZE), ("per_class_ap_onnx.png", (800, per_class_ap_height(5)))):
        assert str(tmp_path / plot) in out
        assert_png(tmp_path / plot, size)


def test_predict_format_coco_then_eval_results_prints_the_eval_ap(scored_run, tmp_path, capsys):
    capsys.readouterr()
    assert main(["eval", str(scored_run["config"]), "--checkpoint", str(scored_run["checkpoint"]),
                 "--output", str(tmp_path / "eval"), "--device", "cpu"]) == 0
    eval_table = [line for line in capsys.readouterr().out.splitlines() if line.startswith(" Average")]
    assert main(["predict", "--checkpoint", str(scored_run["checkpoint"]), str(scored_run["val_images"]),
                 "--format", "coco", "--annotations", str(scored_run["annotations"]), "--output",
                 str(tmp_path / "pred"), "--device", "cpu"]) == 0
    results = json.loads((tmp_path / "pred" / "coco_results.json").read_text())
    ground_truth = json.loads(scored_run["annotations"].read_text())
    assert {r["image_id"] for r in results} == {image["id"] for image in ground_truth["images"]}
    assert {r["category_id"] for r in results} <= {c["id"] for c in ground_truth["categories"]}
    capsys.readouterr()
    assert main(["eval-results", "coco", "--annotations", str(scored_run["annotations"]),
                 "--results", str(tmp_path / "pred" / "coco_results.json")]) == 0
    assert capsys.readouterr().out.splitlines() == eval_table
    assert len(eval_table) == 12 and float(eval_table[0].split("=")[-1]) > 0.1
    # A second run refuses, before any work, to replace the results file; --overwrite replaces it.
    before = (tmp_path / "pred" / "coco_results.json").read_bytes()
    again = ["predict", "--checkpoint", str(scored_run["checkpoint"]), str(scored_run["val_images"]),
             "--format", "coco", "--annotations", str(scored_run["annotations"]), "--output", str(tmp_path / "pred"),
             "--device", "cpu"]
    capsys.readouterr()
    assert main(again) == 1
    error = capsys.readouterr().err
    assert "coco_results.json: COCO results file already exists" in error and "--overwrite" in error
    assert (tmp_path / "pred" / "coco_results.json").read_bytes() == before
    assert main([*again, "--overwrite", "--score-threshold", "0.85"]) == 0
    replaced = json.loads((tmp_path / "pred" / "coco_results.json").read_text())
    assert 0 < len(replaced) < len(results) and min(r["score"] for r in replaced) >= 0.85


def test_predict_format_coco_without_annotations_takes_ids_from_numeric_file_names(scored_run, tmp_path, capsys):
    images = sorted(scored_run["val_images"].iterdir())[:2]  # 000000.jpg, ...: COCO-style names
    assert main(["predict", "--checkpoint", str(scored_run["checkpoint"]), *map(str, images), "--format", "coco",
                 "--output", str(tmp_path / "numeric"), "--device", "cpu"]) == 0
    results = json.loads((tmp_path / "numeric" / "coco_results.json").read_text())
    assert {r["image_id"] for r in results} == {int(p.stem) for p in images}
    named = tmp_path / "holiday.jpg"
    shutil.copy(images[0], named)
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(scored_run["checkpoint"]), str(named), "--format", "coco",
                 "--output", str(tmp_path / "named"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holiday.jpg" in err and "give --annotations" in err
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(scored_run["checkpoint"]), str(named), "--format", "coco",
                 "--annotations", str(scored_run["annotations"]), "--output", str(tmp_path / "named"),
                 "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not in it by file name, e.g. holiday.jpg" in err


def test_training_drew_its_curves(trained_run, assert_png):
    from scaledet.eval.plots import CURVES_SIZE

    assert_png(trained_run["root"] / "run" / "curves.png", CURVES_SIZE)


def test_eval_precision_bf16_scores_the_bf16_copy(scored_run, tmp_path, capsys):
    """``scaledet eval --precision bf16`` scores the bf16 copy. This 2-step model's scores are
    spread random logits and its ground truth is its own detections shifted by 3 px, so AP hangs
    on score differences of 1e-3: which bf16 kernel oneDNN picks (AMX, AVX-512 BF16, emulated)
    moved AP by up to 0.018 and AP50 by up to 0.024, and logits 1-2 bf16 steps apart in another
    process state moved AP by 0.036 (measured, docs/PERFORMANCE.md). The accuracy bounds of
    issue 18 (AP 0.015, AP50 0.01) are checked on a trained model, in tests/cli/test_demo.py."""
    results, detections = {}, {}
    for precision in ("fp32", "bf16"):
        capsys.readouterr()
        assert main(["eval", str(scored_run["config"]), "--checkpoint", str(scored_run["checkpoint"]),
                     "--output", str(tmp_path / precision), "--device", "cpu", "--json",
                     "--precision", precision]) == 0
        results[precision] = json.loads(capsys.readouterr().out)
        detections[precision] = json.loads((tmp_path / precision / "results.json").read_text())
    print(f"\nAP fp32 {results['fp32']['AP']:.6f}, bf16 {results['bf16']['AP']:.6f}; "
          f"AP50 fp32 {results['fp32']['AP50']:.6f}, bf16 {results['bf16']['AP50']:.6f}")
    assert 0.1 < results["fp32"]["AP"] < 0.95
    fp32_scores = [d["score"] for d in detections["fp32"]]
    bf16_scores = [d["score"] for d in detections["bf16"]]
    assert fp32_scores != bf16_scores  # the bf16 copy ran, not the fp32 model
    assert abs(results["bf16"]["AP"] - results["fp32"]["AP"]) <= 0.06
    assert abs(results["bf16"]["AP50"] - results["fp32"]["AP50"]) <= 0.06
