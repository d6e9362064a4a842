"""The plots: PNGs of the expected size with something drawn on them."""
import json

import numpy as np
import pytest

from scaledet.eval.coco import CocoEvaluator
from scaledet.eval.plots import (
    CURVES_SIZE, PR_SIZE, per_class_ap_height, plot_training_curves, write_evaluation_plots,
)


def test_training_curves_from_the_csv_logs(tmp_path, assert_png):
    steps = np.arange(1, 41)
    rows = ["step,lr,loss,cls_loss,box_loss,num_positives,images_per_s"]
    rows += [f"{s},{0.01 * min(1, s / 10)},{3 / s},{2 / s},{1 / s},12,30.0" for s in steps]
    (tmp_path / "metrics.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "eval.csv").write_text("step,AP,AP50\n20,0.1,0.3\n40,0.2,0.45\n")
    path = plot_training_curves(tmp_path)
    assert path == tmp_path / "curves.png"
    assert_png(path, CURVES_SIZE)
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed, not left behind


def test_training_curves_before_any_evaluation(tmp_path, assert_png):
    (tmp_path / "metrics.csv").write_text("step,lr,loss\n1,0.01,2.0\n2,0.01,1.5\n")
    assert_png(plot_training_curves(tmp_path), CURVES_SIZE)


def test_pr_curves_and_per_class_ap_from_a_coco_evaluation(coco_eval_vectors, tmp_path, assert_png):
    gt = coco_eval_vectors / "gt" / "instances_val2014_100.json"
    results = json.loads((coco_eval_vectors / "cocoapi_results" / "instances_val2014_fakebbox100_results.json")
                         .read_text())
    categories = [c["id"] for c in json.loads(gt.read_text())["categories"]]
    result = CocoEvaluator(gt, categories).summarize([results])
    precision = result.details["precision"]
    assert precision.shape == (10, 101, 80)
    # the array the plots draw holds COCO's AP: the mean of its defined entries
    assert precision[precision > -1].mean() == pytest.approx(result.metrics["AP"], abs=1e-12)
    assert "precision" not in result.to_json() and len(result.to_json()["per_class_AP"]) == 80
    pr, bars = write_evaluation_plots(result, tmp_path, "_x")
    assert pr == tmp_path / "pr_curves_x.png" and bars == tmp_path / "per_class_ap_x.png"
    assert_png(pr, PR_SIZE)
    assert_png(bars, (800, per_class_ap_height(80)))
