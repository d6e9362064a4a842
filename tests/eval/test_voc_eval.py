"""VOC AP: hand-computed cases, a sequential reference on random data, and the file readers."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from scaledet.eval.voc import (VOC_CLASSES, VocClassDetections, VocImageAnnotation, evaluate_voc,
                               match_class_detections, read_voc_annotation, read_voc_annotations,
                               read_voc_detection_file, read_voc_detections, voc_ap)


def _ann(*objects: tuple) -> VocImageAnnotation:
    """objects: (name, box) or (name, box, difficult)."""
    boxes = np.array([o[1] for o in objects], dtype=np.float64).reshape(-1, 4)
    difficult = np.array([len(o) > 2 and o[2] for o in objects], dtype=bool)
    return VocImageAnnotation(boxes, [o[0] for o in objects], difficult)


def _dets(*rows: tuple) -> VocClassDetections:
    """rows: (image_id, score, box)."""
    return VocClassDetections([r[0] for r in rows], np.array([r[1] for r in rows], dtype=float),
                              np.array([r[2] for r in rows], dtype=float).reshape(-1, 4))


def _ap(annotations, detections, metric, **kwargs) -> float:
    return evaluate_voc(annotations, {"car": detections}, ("car",), metric, **kwargs)["per_class"]["car"]


A, B = [0, 0, 10, 10], [20, 20, 40, 40]


@pytest.mark.parametrize("metric", ["11point", "area"])
def test_perfect_detections_give_one(metric: str) -> None:
    annotations = {"im1": _ann(("car", A), ("dog", B)), "im2": _ann(("car", B))}
    detections = {"car": _dets(("im1", 0.9, A), ("im2", 0.3, B)), "dog": _dets(("im1", 0.5, B))}
    result = evaluate_voc(annotations, detections, ("car", "dog", "cat"), metric)
    assert result["per_class"]["car"] == pytest.approx(1.0)
    assert result["per_class"]["dog"] == pytest.approx(1.0)
    assert math.isnan(result["per_class"]["cat"])  # no objects: excluded from the mean
    assert result["mAP"] == pytest.approx(1.0)
    assert result["num_positives"] == {"car": 2, "dog": 1, "cat": 0}


def test_duplicate_is_a_false_positive_and_metrics_differ() -> None:
    # TP (A), duplicate of A (FP), TP (B): recall .5 .5 1, precision 1 .5 2/3.
    annotations = {"im": _ann(("car", A), ("car", B))}
    detections = _dets(("im", 0.9, A), ("im", 0.8, [0, 0, 10, 9.5]), ("im", 0.7, B))
    tp, fp, positives = match_class_detections(annotations, "car", detections)
    assert tp.tolist() == [True, False, True] and fp.tolist() == [False, True, False]
    assert positives == 2
    # area: 0.5 * 1 + 0.5 * 2/3 (envelope); 11-point: 6 points at 1, 5 points at 2/3.
    assert _ap(annotations, detections, "area") == pytest.approx(5 / 6)
    assert _ap(annotations, detections, "11point") == pytest.approx(28 / 33)


def test_detection_of_difficult_object_is_ignored() -> None:
    annotations = {"im": _ann(("car", A), ("car", B, True))}
    detections = _dets(("im", 0.9, B), ("im", 0.8, A))
    tp, fp, positives = match_class_detections(annotations, "car", detections)
    assert positives == 1  # difficult objects do not count towards recall
    assert tp.tolist() == [True] and fp.tolist() == [False]  # the difficult hit is dropped
    assert _ap(annotations, detections, "area") == pytest.approx(1.0)
    # Not detecting the difficult object costs nothing either.
    assert _ap(annotations, _dets(("im", 0.8, A)), "11point") == pytest.approx(1.0)


def test_best_overlap_already_claimed_is_a_false_positive() -> None:
    # The second detection overlaps A best (0.952) and B (0.875) less; A is taken -> FP (devkit).
    annotations = {"im": _ann(("car", [0, 0, 10, 10]), ("car", [0, 0, 10, 12]))}
    detections = _dets(("im", 0.9, [0, 0, 10, 10]), ("im", 0.8, [0, 0, 10, 10.5]))
    tp, fp, _ = match_class_detections(annotations, "car", detections)
    assert tp.tolist() == [True, False]
    assert _ap(annotations, detections, "area") == pytest.approx(0.5)


def test_iou_threshold_is_strict_and_pixel_convention_matters() -> None:
    annotations = {"im": _ann(("car", [0, 0, 10, 10]))}
    exactly_half = _dets(("im", 0.9, [0, 0, 10, 20]))  # IoU = 100 / 200 = 0.5
    assert _ap(annotations, exactly_half, "area") == 0.0
    assert _ap(annotations, exactly_half, "area", iou_threshold=0.49) == pytest.approx(1.0)
    # [0,0,1,1] vs [0,0,2,2]: continuous IoU 1/4, inclusive pixels (+1) IoU 4/9.
    small = {"im": _ann(("car", [0, 0, 1, 1]))}
    bigger = _dets(("im", 0.9, [0, 0, 2, 2]))
    assert _ap(small, bigger, "area", iou_threshold=0.3) == 0.0
    assert _ap(small, bigger, "area", iou_threshold=0.3, plus_one=True) == pytest.approx(1.0)


def test_detections_on_images_without_objects_and_missed_classes() -> None:
    annotations = {"a": _ann(("car", A)), "b": _ann(("dog", B))}
    detections = _dets(("b", 0.95, B), ("a", 0.5, A))  # FP first (image b has no car), then TP
    # recall 0, 1; precision 0, 1/2 -> area 0.5, 11-point 0.5 at every threshold.
    assert _ap(annotations, detections, "area") == pytest.approx(0.5)
    assert _ap(annotations, detections, "11point") == pytest.approx(0.5)
    assert _ap(annotations, VocClassDetections(), "area") == 0.0
    with pytest.raises(ValueError, match="not in the ground truth"):
        _ap(annotations, _dets(("zzz", 0.5, A)), "area")
    only_car = evaluate_voc(annotations, {"car": detections}, ("car",))
    assert list(only_car["per_class"]) == ["car"]  # the dog objects are simply not evaluated


def test_voc_ap_on_a_curve() -> None:
    recall = np.array([0.2, 0.4, 0.4, 0.6])
    precision = np.array([1.0, 0.8, 0.5, 0.6])
    # envelope 1, .8, .6, .6 over recall steps .2 each; nothing beyond 0.6
    assert voc_ap(recall, precision, "area") == pytest.approx(0.2 * 1 + 0.2 * 0.8 + 0.2 * 0.6)
    # t=0..0.2 -> 1 (3 points), t=0.3,0.4 -> 0.8, t=0.5,0.6 -> 0.6, t>=0.7 -> 0
    assert voc_ap(recall, precision, "11point") == pytest.approx((3 + 1.6 + 1.2) / 11)
    # A recall of exactly 3/10 reaches the 0.3 point (np.arange(0, 1.1, 0.1) would miss it).
    assert voc_ap(np.array([1, 2, 3]) / 10, np.ones(3), "11point") == pytest.approx(4 / 11)
    assert voc_ap(np.zeros(0), np.zeros(0), "11point") == 0.0
    with pytest.raises(ValueError, match="metric"):
        voc_ap(recall, precision, "auc")


def _sequential_reference(annotations, class_name, dets, threshold):
    """The devkit loop, written plainly: one detection at a time with an explicit claimed set."""
    order = sorted(range(len(dets.scores)), key=lambda i: -dets.scores[i])
    claimed, tp, fp = set(), [], []
    for i in order:
        ann = annotations[dets.image_ids[i]]
        x1, y1, x2, y2 = dets.boxes[i]
        best, best_j = -1.0, None
        for j, (name, box) in enumerate(zip(ann.names, ann.boxes)):
            if name != class_name:
                continue
            iw = min(x2, box[2]) - max(x1, box[0])
            ih = min(y2, box[3]) - max(y1, box[1])
            if iw <= 0 or ih <= 0:
                continue
            inter = iw * ih
            union = (x2 - x1) * (y2 - y1) + (box[2] - box[0]) * (box[3] - box[1]) - inter
            if inter / union > best:
                best, best_j = inter / union, j
        if best > threshold and ann.difficult[best_j]:
            continue
        is_tp = best > threshold and (dets.image_ids[i], best_j) not in claimed
        if is_tp:
            claimed.add((dets.image_ids[i], best_j))
        tp.append(is_tp)
        fp.append(not is_tp)
    return np.array(tp, dtype=bool), np.array(fp, dtype=bool)


def test_vectorised_matching_equals_sequential_reference() -> None:
    rng = np.random.default_rng(0)
    annotations, det_rows = {}, []
    for image in range(30):
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 60, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (n, 2))], axis=1)
        names = list(rng.choice(["car", "dog"], n))
        annotations[f"im{image}"] = VocImageAnnotation(boxes, names, rng.random(n) < 0.2)
        for box in boxes:  # jittered copies (some duplicates) and random boxes
            for _ in range(int(rng.integers(0, 3))):
                det_rows.append((f"im{image}", float(rng.random()), box + rng.normal(0, 3, 4)))
        for _ in range(int(rng.integers(0, 3))):
            xy = rng.uniform(0, 60, 2)
            det_rows.append((f"im{image}", float(rng.random()), np.r_[xy, xy + rng.uniform(5, 30, 2)]))
    detections = _dets(*det_rows)
    for threshold in (0.3, 0.5, 0.7):
        tp, fp, _ = match_class_detections(annotations, "car", detections, threshold)
        ref_tp, ref_fp = _sequential_reference(annotations, "car", detections, threshold)
        assert tp.sum() > 0 and fp.sum() > 0
        np.testing.assert_array_equal(tp, ref_tp)
        np.testing.assert_array_equal(fp, ref_fp)


# ------------------------------------------------------------------------------------ readers
XML = """<annotation><filename>{stem}.jpg</filename>
{objects}</annotation>"""
OBJECT = ("<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{b[0]}</xmin>"
          "<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>")


def _write_xml(folder: Path, stem: str, objects: list[tuple]) -> None:
    body = "".join(OBJECT.format(name=n, b=b, difficult=int(d)) for n, b, d in objects)
    (folder / f"{stem}.xml").write_text(XML.format(stem=stem, objects=body))


def test_readers_round_trip_through_files(tmp_path: Path) -> None:
    annotations_dir, results_dir = tmp_path / "Annotations", tmp_path / "results"
    annotations_dir.mkdir(), results_dir.mkdir()
    _write_xml(annotations_dir, "0001", [("car", A, False), ("car", B, True)])
    _write_xml(annotations_dir, "0002", [("dog", B, False)])
    (results_dir / "comp4_det_test_car.txt").write_text(
        "0001 0.900 0 0 10 10\n\n0001 0.800 20 20 40 40\n0002 0.1 20 20 40 40\n")
    annotations = read_voc_annotations(tmp_path)  # a VOC root: Annotations/ is found
    assert sorted(annotations) == ["0001", "0002"]
    assert annotations["0001"].difficult.tolist() == [False, True]
    np.testing.assert_array_equal(annotations["0001"].boxes, [A, B])
    detections = read_voc_detections(results_dir, ("car", "dog"), known_image_ids=annotations)
    assert detections["car"].image_ids == ["0001", "0001", "0002"]
    np.testing.assert_allclose(detections["car"].scores, [0.9, 0.8, 0.1])
    assert len(detections["dog"].scores) == 0  # no file: no detections
    result = evaluate_voc(annotations, detections, ("car", "dog"), "area")
    # car: TP, difficult (ignored), FP -> AP 1; dog: never detected -> AP 0
    assert result["per_class"] == {"car": pytest.approx(1.0), "dog": 0.0}
    assert result["mAP"] == pytest.approx(0.5)


def test_reader_errors_name_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "bad.xml").write_text("<annotation><object>")
    with pytest.raises(ValueError, match=r"bad\.xml: malformed XML"):
        read_voc_annotation(tmp_path / "bad.xml")
    (tmp_path / "nobox.xml").write_text(
        "<annotation><object><name>car</name><bndbox><xmin>1</xmin></bndbox></object></annotation>")
    with pytest.raises(ValueError, match=r"nobox\.xml: object #0 has no numeric <ymin>"):
        read_voc_annotation(tmp_path / "nobox.xml")
    with pytest.raises(FileNotFoundError, match=r"0042\.xml"):
        read_voc_annotations(tmp_path, image_ids=["0042"])
    with pytest.raises(ValueError, match="no VOC .xml"):
        read_voc_annotations(_empty_dir(tmp_path))
    det = tmp_path / "comp4_det_test_car.txt"
    det.write_text("0001 0.9 0 0 10 10\n0001 0.9 0 0 10\n")
    with pytest.raises(ValueError, match=r"comp4_det_test_car\.txt:2: expected"):
        read_voc_detection_file(det)
    det.write_text("0001 high 0 0 10 10\n")
    with pytest.raises(ValueError, match=r"comp4_det_test_car\.txt:1: expected"):
        read_voc_detection_file(det)
    det.write_text("0009 0.5 0 0 10 10\n")
    with pytest.raises(ValueError, match=r":1: image '0009' is not in the ground truth"):
        read_voc_detection_file(det, known_image_ids={"0001"})
    with pytest.raises(ValueError, match="no detection files"):
        read_voc_detections(_empty_dir(tmp_path), ("car",))


def _empty_dir(tmp_path: Path) -> Path:
    empty = tmp_path / "empty"
    empty.mkdir(exist_ok=True)
    return empty


def test_real_voc_annotations(voc100: Path) -> None:
    annotations = read_voc_annotations(voc100 / "Annotations")
    assert len(annotations) == 100
    assert sum(len(a.names) for a in annotations.values()) == 273  # SOURCE.md counts
    assert sum(int(a.difficult.sum()) for a in annotations.values()) == 38
    assert {n for a in annotations.values() for n in a.names} == set(VOC_CLASSES)
    # Ground truth as detections: every class with non-difficult objects scores 1.
    detections = {
        name: _dets(*[(image_id, 1.0, box) for image_id, ann in annotations.items()
                      for box, n in zip(ann.boxes, ann.names) if n == name])
        for name in VOC_CLASSES}
    for metric in ("11point", "area"):
        assert evaluate_voc(annotations, detections, metric=metric)["mAP"] == pytest.approx(1.0)
    # Dropping every second person lowers person AP to the recall reached (precision stays 1).
    person = detections["person"]
    halved = VocClassDetections(person.image_ids[::2], person.scores[::2], person.boxes[::2])
    result = evaluate_voc(annotations, {**detections, "person": halved}, metric="area")
    kept = match_class_detections(annotations, "person", halved)
    assert result["per_class"]["person"] == pytest.approx(kept[0].sum() / kept[2])
    assert result["per_class"]["person"] < 0.6
