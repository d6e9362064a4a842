"""Invalid ground truth or results are refused with the file, the entry and the field named;
nothing is scored, and the user's files are unchanged (real coco_tiny / VOC files)."""
import hashlib
import json
import math
import re
import shutil

import pytest

from scaledet.cli.main import main


def _gt(coco_tiny):
    data = json.loads((coco_tiny / "annotations" / "instances_train2017.json").read_text())
    data["images"] = data["images"][:5]
    keep = {im["id"] for im in data["images"]}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    return data


def _results(gt):
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
            for a in gt["annotations"]]


def _run(tmp_path, gt, results, capsys):
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(results))
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (gt_path, res_path)}
    code = main(["eval-results", "coco", "--annotations", str(gt_path), "--results", str(res_path), "--json"])
    captured = capsys.readouterr()
    assert all(hashlib.sha256(p.read_bytes()).hexdigest() == d for p, d in before.items())
    return code, captured


def test_valid_files_score(coco_tiny, tmp_path, capsys):
    gt = _gt(coco_tiny)
    code, out = _run(tmp_path, gt, _results(gt), capsys)
    assert code == 0 and json.loads(out.out)["AP50"] == pytest.approx(1.0)


def _nan_box(gt):
    gt["annotations"][0]["bbox"][2] = math.nan


def _negative_box(gt):
    gt["annotations"][1]["bbox"][3] = -4.0


def _inf_box(gt):
    gt["annotations"][0]["bbox"][0] = math.inf


def _unknown_image(gt):
    gt["annotations"][2]["image_id"] = 999999999


def _unknown_category(gt):
    gt["annotations"][2]["category_id"] = 4242


def _duplicate_category(gt):
    gt["categories"].append(dict(gt["categories"][0]))


def _duplicate_image(gt):
    gt["images"].append(dict(gt["images"][0]))


@pytest.mark.parametrize("corrupt, message", [
    (_nan_box, r"gt.json: annotation #0 \(id \d+\): field 'bbox' must be 4 finite numbers"),
    (_negative_box, r"gt.json: annotation #1 \(id \d+\): field 'bbox' has a negative width or height"),
    (_inf_box, r"gt.json: annotation #0 \(id \d+\): field 'bbox' must be 4 finite numbers"),
    (_unknown_image, r"gt.json: annotation #2 \(id \d+\): field 'image_id' is 999999999, which is not an? image"),
    (_unknown_category, r"gt.json: annotation #2 \(id \d+\): field 'category_id' is 4242, which is not a category"),
    (_duplicate_category, r"gt.json: duplicate category id 1 \(category entries #0 and #80\) in the ground truth"),
    (_duplicate_image, r"gt.json: duplicate image id \d+ \(image entries #0 and #5\) in the ground truth"),
])
def test_invalid_ground_truth_is_refused(coco_tiny, tmp_path, capsys, corrupt, message):
    gt = _gt(coco_tiny)
    results = _results(gt)
    corrupt(gt)
    code, out = _run(tmp_path, gt, results, capsys)
    assert code == 1 and out.out == ""  # nothing scored
    err = out.err.strip()
    assert len(err.splitlines()) == 1
    assert re.search(message, err), err


@pytest.mark.parametrize("field, value, message", [
    ("bbox", [1.0, 2.0, 3.0], r"detection #3: field 'bbox' must be 4 finite numbers"),
    ("bbox", [1.0, 2.0, -3.0, 4.0], r"detection #3: field 'bbox' has a negative width or height"),
    ("score", "0.9", r"detection #3: field 'score' must be a finite number, got '0.9'"),
    ("score", math.nan, r"detection #3: field 'score' must be a finite number, got nan"),
    ("image_id", "5", r"detection #3: field 'image_id' must be an integer, got '5'"),
])
def test_invalid_results_are_refused(coco_tiny, tmp_path, capsys, field, value, message):
    gt = _gt(coco_tiny)
    results = _results(gt)
    results[3][field] = value
    code, out = _run(tmp_path, gt, results, capsys)
    assert code == 1 and out.out == ""
    assert re.search(r"res.json: " + message, out.err), out.err


def test_degenerate_voc_ground_truth_box_is_refused(voc100, tmp_path, capsys):
    annotations = tmp_path / "Annotations"
    shutil.copytree(voc100 / "Annotations", annotations)
    victim = sorted(annotations.glob("*.xml"))[0]
    text = victim.read_text()
    start = text.index("<xmax>") + len("<xmax>")
    victim.write_text(text[:start] + "0" + text[text.index("</xmax>"):])  # xmax 0 < xmin
    results = tmp_path / "results"
    results.mkdir()
    (results / "comp4_det_test_person.txt").write_text(f"{victim.stem} 0.9 1 1 10 10\n")
    before = hashlib.sha256(victim.read_bytes()).hexdigest()
    code = main(["eval-results", "voc", "--annotations", str(annotations), "--results", str(results)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and f"{victim.name}: object #" in err and "degenerate box" in err and "xmax=0" in err
    assert hashlib.sha256(victim.read_bytes()).hexdigest() == before
