"""``scaledet eval-results``: published COCO vectors end to end, VOC folders, one-line errors."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scaledet.cli.main import main
from scaledet.eval.coco import COCO_STAT_NAMES

# inside the coco_eval_vectors folder
GT = "gt/instances_val2014_100.json"
FAKE_RESULTS = {"bbox": "cocoapi_results/instances_val2014_fakebbox100_results.json",
                "segm": "cocoapi_results/instances_val2014_fakesegm100_results.json"}
REVIEW_ODM_EXPECTED = (0.503647, 0.696973, 0.571667, 0.593252, 0.557991, 0.489363, 0.386813,
                       0.593680, 0.595353, 0.654764, 0.603130, 0.553744)


@pytest.fixture(scope="module")
def vectors(coco_eval_vectors: Path) -> Path:
    return coco_eval_vectors


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _coco_json(capsys, annotations: Path, results: Path, iou_type: str = "bbox") -> dict:
    code, out, err = _run(capsys, "eval-results", "coco", "--annotations", str(annotations),
                          "--results", str(results), "--iou-type", iou_type, "--json")
    assert code == 0, err
    stats = json.loads(out)
    assert list(stats) == list(COCO_STAT_NAMES)
    return stats


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_coco_published_vectors(vectors, capsys, published_coco_stats, iou_type) -> None:
    stats = _coco_json(capsys, vectors / GT, vectors / FAKE_RESULTS[iou_type], iou_type)
    np.testing.assert_allclose([stats[k] for k in COCO_STAT_NAMES], published_coco_stats[iou_type],
                               rtol=0, atol=1e-9)


def test_coco_review_odm_vector(vectors, capsys) -> None:
    folder = vectors / "review_odm_test_coco_eval"
    # The detections file is a COCO dict whose "annotations" are the detections.
    stats = _coco_json(capsys, folder / "gts" / "sampled_gts_bbox_area.json",
                       folder / "dets" / "sampled_bbox_results.json")
    np.testing.assert_allclose([stats[k] for k in COCO_STAT_NAMES], REVIEW_ODM_EXPECTED,
                               rtol=0, atol=1e-6)


def test_coco_console_script(vectors, published_coco_stats) -> None:
    script = shutil.which("scaledet")
    command = [script] if script else [sys.executable, "-m", "scaledet.cli.main"]
    done = subprocess.run(command + ["eval-results", "coco", "--annotations", str(vectors / GT),
                                     "--results", str(vectors / FAKE_RESULTS["bbox"]), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    np.testing.assert_allclose([stats[k] for k in COCO_STAT_NAMES], published_coco_stats["bbox"],
                               rtol=0, atol=1e-9)


def test_coco_table_output(vectors, capsys) -> None:
    code, out, _ = _run(capsys, "eval-results", "coco", "--annotations", str(vectors / GT),
                        "--results", str(vectors / FAKE_RESULTS["bbox"]))
    assert code == 0
    lines = out.rstrip("\n").splitlines()
    assert len(lines) == 12
    assert lines[0] == (" Average Precision (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]"
                        " = 0.505")
    assert lines[6].endswith("maxDets=  1 ] = 0.387")


def _one_line_error(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("scaledet eval-results: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_coco_errors_are_one_line_and_name_the_file(tmp_path, capsys) -> None:
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": [{"id": 1, "width": 10, "height": 10}],
                              "categories": [{"id": 1, "name": "x"}], "annotations": []}))
    broken = tmp_path / "broken_results.json"
    broken.write_text('[{"image_id": 1, "category_id"')
    code, out, err = _run(capsys, "eval-results", "coco", "--annotations", str(gt),
                          "--results", str(broken))
    assert code == 1 and out == ""
    _one_line_error(err, str(broken), "not valid JSON")

    missing = tmp_path / "nowhere.json"
    code, _, err = _run(capsys, "eval-results", "coco", "--annotations", str(missing),
                        "--results", str(broken))
    assert code == 1
    _one_line_error(err, str(missing), "not found")

    code, _, err = _run(capsys, "eval-results", "coco", "--annotations", str(broken),
                        "--results", str(gt))
    assert code == 1
    _one_line_error(err, str(broken))


def _write_voc(tmp_path: Path) -> tuple[Path, Path]:
    annotations, results = tmp_path / "Annotations", tmp_path / "Main"
    annotations.mkdir(), results.mkdir()
    obj = ("<object><name>{}</name><difficult>0</difficult><bndbox><xmin>{}</xmin><ymin>{}</ymin>"
           "<xmax>{}</xmax><ymax>{}</ymax></bndbox></object>")
    (annotations / "a.xml").write_text(
        "<annotation>" + obj.format("car", 0, 0, 10, 10) + obj.format("car", 20, 20, 40, 40)
        + obj.format("dog", 50, 50, 90, 90) + "</annotation>")
    # car: TP, duplicate FP, TP -> area 5/6, 11-point 28/33; dog: IoU 0.95, a TP at --iou 0.5
    (results / "comp4_det_test_car.txt").write_text(
        "a 0.9 0 0 10 10\na 0.8 0 0 10 9.5\na 0.7 20 20 40 40\n")
    (results / "comp4_det_test_dog.txt").write_text("a 0.6 50 50 90 88\n")
    return annotations, results


@pytest.mark.parametrize("metric, car_ap", [("area", 5 / 6), ("11point", 28 / 33)])
def test_voc_json(tmp_path, capsys, metric, car_ap) -> None:
    annotations, results = _write_voc(tmp_path)
    code, out, err = _run(capsys, "eval-results", "voc", "--annotations", str(annotations),
                          "--results", str(results), "--metric", metric, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["per_class"]["car"] == pytest.approx(car_ap)
    assert report["per_class"]["dog"] == pytest.approx(1.0)
    assert report["per_class"]["cat"] is None  # no cat objects: not part of the mAP
    assert report["mAP"] == pytest.approx((car_ap + 1.0) / 2)


def test_voc_table_and_iou_option(tmp_path, capsys) -> None:
    annotations, results = _write_voc(tmp_path)
    code, out, _ = _run(capsys, "eval-results", "voc", "--annotations", str(annotations),
                        "--results", str(results), "--iou", "0.96", "--classes", "car,dog")
    assert code == 0
    lines = out.strip().splitlines()
    # IoU must exceed 0.96: the dog box (0.95) misses; car keeps 5/6 (its TPs are exact).
    assert [line.split() for line in lines] == [["car:", "0.8333"], ["dog:", "0.0000"],
                                                ["mAP:", "0.4167"]]


def test_voc_errors_are_one_line(tmp_path, capsys) -> None:
    annotations, results = _write_voc(tmp_path)
    bad = results / "comp4_det_test_car.txt"
    bad.write_text("a 0.9 0 0 10 10\na 0.8 0 0\n")
    code, _, err = _run(capsys, "eval-results", "voc", "--annotations", str(annotations),
                        "--results", str(results))
    assert code == 1
    _one_line_error(err, f"{bad}:2")

    (annotations / "b.xml").write_text("<annotation><object>")
    code, _, err = _run(capsys, "eval-results", "voc", "--annotations", str(annotations),
                        "--results", str(results))
    assert code == 1
    _one_line_error(err, str(annotations / "b.xml"), "malformed XML")

    (annotations / "b.xml").unlink()
    code, _, err = _run(capsys, "eval-results", "voc", "--annotations", str(annotations),
                        "--results", str(results), "--classes", "car")
    assert code == 1
    _one_line_error(err, "dog", "--classes")


@pytest.mark.parametrize("argv", [["eval-results"], ["eval-results", "coco"],
                                  ["eval-results", "voc"]])
def test_help_has_a_worked_example(capsys, argv) -> None:
    with pytest.raises(SystemExit) as stop:
        main(argv + ["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert "scaledet eval-results" in out and "example" in out


def test_voc_real_annotations_with_image_set(voc100, tmp_path, capsys) -> None:
    voc_root = voc100
    image_set = voc_root / "ImageSets" / "Segmentation" / "val.txt"
    import xml.etree.ElementTree as ET

    val_ids = image_set.read_text().split()
    lines_by_class: dict[str, list[str]] = {}
    classes_with_objects = set()
    for image_id in val_ids:
        for obj in ET.parse(voc_root / "Annotations" / f"{image_id}.xml").iter("object"):
            name, box = obj.findtext("name"), obj.find("bndbox")
            coords = " ".join(box.findtext(t) for t in ("xmin", "ymin", "xmax", "ymax"))
            lines_by_class.setdefault(name, []).append(f"{image_id} 0.9 {coords}")
            if obj.findtext("difficult") != "1":
                classes_with_objects.add(name)
    for name, lines in lines_by_class.items():
        (tmp_path / f"comp4_det_val_{name}.txt").write_text("\n".join(lines) + "\n")
    argv = ["eval-results", "voc", "--annotations", str(voc_root), "--image-set", str(image_set),
            "--results", str(tmp_path), "--metric", "11point", "--plus-one", "--json"]
    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    report = json.loads(out)
    assert report["mAP"] == pytest.approx(1.0)
    assert {k for k, v in report["per_class"].items() if v is not None} == classes_with_objects

    # An image outside the image set is not ground truth: its detections are an error.
    train_list = voc_root / "ImageSets" / "Segmentation" / "train.txt"
    outside = sorted(train_list.read_text().split())[0]
    (tmp_path / "comp4_det_val_person.txt").write_text(f"{outside} 0.5 1 1 20 20\n")
    code, _, err = _run(capsys, *argv)
    assert code == 1
    _one_line_error(err, "comp4_det_val_person.txt:1", outside)
    code, _, err = _run(capsys, *argv[:5], str(tmp_path / "no_such_list.txt"), *argv[6:])
    assert code == 1
    _one_line_error(err, "no_such_list.txt")
