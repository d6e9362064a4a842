"""COCO metrics: official cocoapi fake-result vectors and small hand-built cases."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from scaledet.eval.coco import (COCO_STAT_NAMES, detections_to_coco_results, evaluate_coco,
                                format_coco_table)


@pytest.fixture(scope="module")
def vectors(coco_eval_vectors: Path) -> Path:
    return coco_eval_vectors


def _tiny_gt() -> dict:
    return {
        "images": [{"id": 1, "width": 200, "height": 200}, {"id": 2, "width": 200, "height": 200}],
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 100, 100], "area": 10000,
             "iscrowd": 0},
            # no "area": the box area (3000, a medium object) is used
            {"id": 2, "image_id": 2, "category_id": 7, "bbox": [20, 30, 50, 60], "iscrowd": 0},
        ],
    }


def test_bbox_vector_matches_published_stats(vectors: Path, published_coco_stats) -> None:
    stats = evaluate_coco(vectors / "gt" / "instances_val2014_100.json",
                          vectors / "cocoapi_results" / "instances_val2014_fakebbox100_results.json")
    assert tuple(stats) == COCO_STAT_NAMES
    np.testing.assert_allclose([stats[k] for k in COCO_STAT_NAMES], published_coco_stats["bbox"], rtol=0, atol=1e-9)


def test_segm_vector_matches_published_stats(vectors: Path, published_coco_stats) -> None:
    stats = evaluate_coco(vectors / "gt" / "instances_val2014_100.json",
                          vectors / "cocoapi_results" / "instances_val2014_fakesegm100_results.json",
                          iou_type="segm")
    np.testing.assert_allclose([stats[k] for k in COCO_STAT_NAMES], published_coco_stats["segm"], rtol=0, atol=1e-9)


def test_in_memory_inputs_equal_files_and_are_not_modified(vectors: Path, published_coco_stats) -> None:
    gt = json.loads((vectors / "gt" / "instances_val2014_100.json").read_text())
    results = json.loads(
        (vectors / "cocoapi_results" / "instances_val2014_fakebbox100_results.json").read_text())
    before = json.dumps(results)
    stats = evaluate_coco(gt, results)
    np.testing.assert_allclose([stats[k] for k in COCO_STAT_NAMES], published_coco_stats["bbox"], atol=1e-9)
    assert json.dumps(results) == before  # loadRes adds keys in place; we must not


def test_table_matches_cocoapi_printout(vectors: Path, published_coco_stats) -> None:
    printed = (vectors / "cocoapi_results" / "val2014_fake_eval_res.txt").read_text().splitlines()
    start = printed.index("type=bbox") + 3
    expected = printed[start:start + 12]
    stats = dict(zip(COCO_STAT_NAMES, published_coco_stats["bbox"]))
    assert format_coco_table(stats).splitlines() == expected


def test_perfect_detections_give_one() -> None:
    results = (detections_to_coco_results(1, torch.tensor([[10.0, 10, 110, 110]]), torch.tensor([0.9]),
                                          torch.tensor([0]), [3, 7])
               + detections_to_coco_results(2, np.array([[20.0, 30, 70, 90]]), [0.8], [1], [3, 7]))
    stats = evaluate_coco(_tiny_gt(), results)
    assert stats["AP"] == pytest.approx(1.0)
    assert stats["AR100"] == pytest.approx(1.0)
    assert stats["APm"] == pytest.approx(1.0)  # the area-less box got its box area (medium)
    assert stats["APs"] == -1.0  # no small objects at all: COCO's "undefined"


def test_wrong_category_lowers_ap() -> None:
    results = [{"image_id": 1, "category_id": 3, "bbox": [10, 10, 100, 100], "score": 0.9},
               {"image_id": 2, "category_id": 3, "bbox": [20, 30, 50, 60], "score": 0.8}]
    stats = evaluate_coco(_tiny_gt(), results)
    assert stats["AP"] == pytest.approx(0.5)  # cat found, dog missed (mean over 2 categories)


def test_empty_results_give_zeros_not_a_crash() -> None:
    stats = evaluate_coco(_tiny_gt(), [])
    for name in COCO_STAT_NAMES:
        assert stats[name] == (-1.0 if name in ("APs", "ARs") else 0.0), name


def test_detections_to_coco_results_converts_boxes_and_ids() -> None:
    entries = detections_to_coco_results(
        5, torch.tensor([[1.0, 2.0, 11.0, 22.0], [0, 0, 0, 0]]), torch.tensor([0.75, 0.0]),
        torch.tensor([1, -1]), {0: 1, 1: 90})
    assert entries == [{"image_id": 5, "category_id": 90, "bbox": [1.0, 2.0, 10.0, 20.0],
                        "score": 0.75}]
    with pytest.raises(ValueError, match="differ in length"):
        detections_to_coco_results(1, np.zeros((2, 4)), [0.5], [0, 0], [1])


def test_bad_inputs_name_the_file(tmp_path: Path) -> None:
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(_tiny_gt()))
    broken = tmp_path / "broken.json"
    broken.write_text('[{"image_id": 1,')
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        evaluate_coco(gt_path, broken)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        evaluate_coco(tmp_path / "missing.json", [])
    not_gt = tmp_path / "list.json"
    not_gt.write_text("[]")
    with pytest.raises(ValueError, match="list.json: expected a COCO annotation object"):
        evaluate_coco(not_gt, [])
    wrong_image = tmp_path / "res.json"
    wrong_image.write_text(json.dumps([{"image_id": 99, "category_id": 3, "bbox": [0, 0, 1, 1],
                                        "score": 1.0}]))
    with pytest.raises(ValueError, match="res.json: detection #0 has image_id 99"):
        evaluate_coco(gt_path, wrong_image)
    wrong_category = [{"image_id": 1, "category_id": 0, "bbox": [0, 0, 1, 1], "score": 1.0}]
    with pytest.raises(ValueError, match="category_id 0"):
        evaluate_coco(gt_path, wrong_category)
    with pytest.raises(ValueError, match="lacks score"):
        evaluate_coco(gt_path, [{"image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1]}])
