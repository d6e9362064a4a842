"""VOCDetection against the original VOC files (parsed independently here) and bad input."""
from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scaledet.data.images import ImageError
from scaledet.data.ssd_transforms import SSDTrainTransform
from scaledet.data.voc import VOC_CLASSES, VOCAnnotationError, VOCDetection


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def voc_ice(shared_data: Path) -> Path:
    root = shared_data / "voc_icevision_sample"
    if not (root / "Annotations").is_dir():
        pytest.skip(f"{root} not found")
    return root


def xml_objects(path: Path) -> list[tuple[str, bool, list[float]]]:
    """(name, difficult, 1-based box) per object, read with plain ElementTree."""
    objects = []
    for obj in ET.parse(path).getroot().findall("object"):
        box = [float(obj.find("bndbox").find(t).text) for t in ("xmin", "ymin", "xmax", "ymax")]
        objects.append((obj.find("name").text.strip(), obj.find("difficult").text.strip() == "1", box))
    return objects


# ------------------------------------------------------------------------------- real data
def test_objects_match_xml(voc100: Path) -> None:
    ds = VOCDetection(voc100)
    xml_files = sorted((voc100 / "Annotations").glob("*.xml"))
    assert len(ds) == len(xml_files) == 100
    assert ds.ids == [p.stem for p in xml_files]
    total = difficult_total = 0
    classes_seen = set()
    for index, path in enumerate(xml_files):
        objects = xml_objects(path)
        record = ds.records[index]
        assert [VOC_CLASSES[k] for k in record.labels] == [o[0] for o in objects]
        assert record.difficult.tolist() == [o[1] for o in objects]
        total += len(objects)
        difficult_total += sum(o[1] for o in objects)
        classes_seen |= {o[0] for o in objects}
    assert (total, difficult_total, len(classes_seen)) == (273, 38, 20)  # SOURCE.md

    for image_id in ("2007_000032", "2007_000129", "2007_000027", "2007_001585"):
        image, target = ds.load_raw(ds.ids.index(image_id))
        objects = xml_objects(voc100 / "Annotations" / f"{image_id}.xml")
        size = ET.parse(voc100 / "Annotations" / f"{image_id}.xml").getroot().find("size")
        height, width = int(size.find("height").text), int(size.find("width").text)
        assert image.dtype == torch.uint8 and tuple(image.shape) == (3, height, width)
        assert target["orig_size"] == (height, width) and target["scale"] == (1.0, 1.0)
        assert target["file_name"] == f"{image_id}.jpg"
        assert target["image_id"] == int(image_id.replace("_", ""))
        expected = torch.tensor([[b[0] - 1, b[1] - 1, b[2], b[3]] for _, _, b in objects])
        assert torch.equal(target["boxes"], expected.float())
        assert target["boxes"].dtype == torch.float32
        assert target["labels"].tolist() == [VOC_CLASSES.index(o[0]) for o in objects]
        assert target["labels"].dtype == torch.int64
        assert target["difficult"].tolist() == [o[1] for o in objects]
        assert target["iscrowd"].dtype == torch.bool and not target["iscrowd"].any()


def test_use_difficult_false_drops_them(voc100: Path) -> None:
    ds = VOCDetection(voc100, image_ids=["2007_000129"], use_difficult=False)
    objects = xml_objects(voc100 / "Annotations" / "2007_000129.xml")
    _, target = ds.load_raw(0)
    assert any(o[1] for o in objects)
    assert len(target["labels"]) == sum(not o[1] for o in objects)
    assert not target["difficult"].any()


def test_splits_fall_back_to_segmentation_lists(voc100: Path) -> None:
    assert not (voc100 / "ImageSets" / "Main").exists()
    for split in ("train", "val", "trainval"):
        listed = (voc100 / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
        ds = VOCDetection(voc100, split)
        assert ds.ids == listed
        assert VOCDetection(voc100, f"Segmentation/{split}").ids == listed
    assert (len(VOCDetection(voc100, "train")), len(VOCDetection(voc100, "val"))) == (43, 50)
    with pytest.raises(VOCAnnotationError, match="test.*not found"):
        VOCDetection(voc100, "test")


def test_masks_load_and_missing_mask_is_all_ignore(voc100: Path) -> None:
    ds = VOCDetection(voc100)
    assert ds.num_masked == 93
    for image_id in ("2007_000032", "2007_000063", "2007_000129", "2007_001585"):
        index = ds.ids.index(image_id)
        image, target = ds.load_raw(index)
        mask = target["mask"]
        assert mask.dtype == torch.int64 and mask.shape == image.shape[-2:]
        raw = np.array(Image.open(voc100 / "SegmentationClass" / f"{image_id}.png"))
        assert torch.equal(mask, torch.from_numpy(raw).long())
        values = set(mask.unique().tolist())
        assert values <= set(range(21)) | {255} and 255 in values
        # Every object class in the mask is an object class of the XML (labels shifted by 1).
        assert values - {0, 255} <= {int(k) + 1 for k in target["labels"]}
    counts = torch.bincount(ds.load_raw(ds.ids.index("2007_000032"))[1]["mask"].flatten(),
                            minlength=256)
    assert (counts[1].item(), counts[15].item()) == (4734, 866)  # SOURCE.md / keras-cv

    no_mask = ds.ids.index("2007_000027")
    assert not (voc100 / "SegmentationClass" / "2007_000027.png").exists()
    image, target = ds.load_raw(no_mask)
    assert target["mask"].shape == image.shape[-2:]
    assert (target["mask"] == 255).all() and target["mask"].dtype == torch.int64


def test_segmentation_modes(voc100: Path) -> None:
    assert len(VOCDetection(voc100, "trainval", segmentation="required")) == 93
    with pytest.raises(VOCAnnotationError, match="no mask for 7 of 100 images.*2007_000027"):
        VOCDetection(voc100, segmentation="required")
    _, target = VOCDetection(voc100, image_ids=["2007_000032"], segmentation="none").load_raw(0)
    assert "mask" not in target
    with pytest.raises(ValueError, match="segmentation must be one of"):
        VOCDetection(voc100, segmentation="maybe")


def test_icevision_sample_detection_only_image(voc_ice: Path) -> None:
    ds = VOCDetection(voc_ice)
    assert ds.ids == ["2007_000063", "2011_003353"]
    _, seg = ds.load_raw(0)
    counts = torch.bincount(seg["mask"].flatten(), minlength=256)
    assert {k: counts[k].item() for k in (0, 9, 12, 255)} == \
        {0: 72224, 9: 78930, 12: 27632, 255: 8714}  # SOURCE.md
    image, det_only = ds.load_raw(1)
    assert (det_only["mask"] == 255).all() and det_only["mask"].shape == image.shape[-2:]
    objects = xml_objects(voc_ice / "Annotations" / "2011_003353.xml")
    assert det_only["labels"].tolist() == [VOC_CLASSES.index(o[0]) for o in objects]


def test_extra_masks_dir_fills_gaps_only(voc100: Path, tmp_path: Path) -> None:
    root = tmp_path / "VOC2012"
    for sub in ("Annotations", "JPEGImages", "SegmentationClass"):
        (root / sub).mkdir(parents=True)
    for image_id in ("2007_000027", "2007_000032"):
        shutil.copy(voc100 / "Annotations" / f"{image_id}.xml", root / "Annotations")
        shutil.copy(voc100 / "JPEGImages" / f"{image_id}.jpg", root / "JPEGImages")
    shutil.copy(voc100 / "SegmentationClass" / "2007_000032.png", root / "SegmentationClass")
    aug = tmp_path / "SegmentationClassAug"
    aug.mkdir()
    # SBD-style grey PNGs: one for the image lacking a mask, one that must NOT override.
    Image.fromarray(np.full((500, 486), 15, np.uint8), "L").save(aug / "2007_000027.png")
    Image.fromarray(np.full((281, 500), 3, np.uint8), "L").save(aug / "2007_000032.png")
    ds = VOCDetection(root, extra_masks_dir=aug)
    assert ds.num_masked == 2
    assert (ds.load_raw(0)[1]["mask"] == 15).all()
    official = np.array(Image.open(voc100 / "SegmentationClass" / "2007_000032.png"))
    assert torch.equal(ds.load_raw(1)[1]["mask"], torch.from_numpy(official).long())


def test_dataset_with_ssd_transform(voc100: Path) -> None:
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ds = VOCDetection(voc100, "val", SSDTrainTransform(96, mean, std))
    torch.manual_seed(0)
    image, target = ds[0]
    assert image.shape == (3, 96, 96) and image.dtype == torch.float32
    assert target["mask"].shape == (96, 96)
    assert len(target["boxes"]) == len(target["labels"]) == len(target["difficult"])


# ------------------------------------------------------------------------------- bad input
def _xml(objects: str, width: int = 40, height: int = 30) -> str:
    return (f"<annotation><filename>x.jpg</filename><size><width>{width}</width>"
            f"<height>{height}</height><depth>3</depth></size>{objects}</annotation>")


def _object(name: str = "dog", box: tuple = (5, 6, 20, 25), difficult: int = 0) -> str:
    xmin, ymin, xmax, ymax = box
    return (f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>"
            f"<xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax>"
            "</bndbox></object>")


def _make_voc(root: Path, xml: str, image_id: str = "img1", size: tuple = (30, 40),
              with_image: bool = True) -> Path:
    for sub in ("Annotations", "JPEGImages", "SegmentationClass"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "Annotations" / f"{image_id}.xml").write_text(xml)
    if with_image:
        Image.fromarray(np.zeros((*size, 3), np.uint8)).save(root / "JPEGImages" / f"{image_id}.jpg")
    return root


def _one_line_error(excinfo: pytest.ExceptionInfo, file_name: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and file_name in message
    return message


def test_malformed_xml(tmp_path: Path) -> None:
    root = _make_voc(tmp_path, "<annotation><object><name>dog</name></annotation")
    with pytest.raises(VOCAnnotationError) as excinfo:
        VOCDetection(root)
    assert "malformed XML" in _one_line_error(excinfo, "img1.xml")


def test_unknown_class(tmp_path: Path) -> None:
    root = _make_voc(tmp_path, _xml(_object("dog") + _object("unicorn")))
    with pytest.raises(VOCAnnotationError) as excinfo:
        VOCDetection(root)
    message = _one_line_error(excinfo, "img1.xml")
    assert "object #1" in message and "'unicorn'" in message


def test_missing_image(tmp_path: Path) -> None:
    root = _make_voc(tmp_path, _xml(_object()), with_image=False)
    with pytest.raises(ImageError) as excinfo:
        VOCDetection(root)
    assert "not found" in _one_line_error(excinfo, "img1.jpg")


def test_degenerate_box_and_bad_numbers(tmp_path: Path) -> None:
    root = _make_voc(tmp_path, _xml(_object(box=(20, 6, 10, 25))))
    with pytest.raises(VOCAnnotationError) as excinfo:
        VOCDetection(root)
    assert "degenerate box" in _one_line_error(excinfo, "img1.xml")
    _make_voc(tmp_path, _xml(_object(box=(5, "six", 20, 25))))
    with pytest.raises(VOCAnnotationError, match=r"img1\.xml.*numeric <ymin>"):
        VOCDetection(tmp_path)


def test_one_pixel_box_is_valid_and_boxes_are_zero_based(tmp_path: Path) -> None:
    root = _make_voc(tmp_path, _xml(_object(box=(1, 1, 1, 30)) + _object("cat", (1, 1, 40, 30))))
    _, target = VOCDetection(root).load_raw(0)
    assert target["boxes"].tolist() == [[0, 0, 1, 30], [0, 0, 40, 30]]
    assert target["labels"].tolist() == [VOC_CLASSES.index("dog"), VOC_CLASSES.index("cat")]
    assert target["image_id"] == 0  # non-numeric id -> index


def test_mask_errors(tmp_path: Path) -> None:
    root = _make_voc(tmp_path, _xml(_object()))
    mask_path = root / "SegmentationClass" / "img1.png"
    Image.fromarray(np.zeros((31, 40), np.uint8), "L").save(mask_path)
    ds = VOCDetection(root)
    with pytest.raises(VOCAnnotationError) as excinfo:
        ds.load_raw(0)
    assert "31x40" in _one_line_error(excinfo, "img1.png")
    Image.fromarray(np.zeros((30, 40, 3), np.uint8), "RGB").save(mask_path)
    with pytest.raises(VOCAnnotationError) as excinfo:
        ds.load_raw(0)
    assert "mode 'RGB'" in _one_line_error(excinfo, "img1.png")
    Image.fromarray(np.full((30, 40), 21, np.uint8), "L").save(mask_path)
    with pytest.raises(VOCAnnotationError) as excinfo:
        ds.load_raw(0)
    assert "label 21" in _one_line_error(excinfo, "img1.png")


def test_image_size_differs_from_xml(tmp_path: Path) -> None:
    root = _make_voc(tmp_path, _xml(_object()), size=(32, 40))
    with pytest.raises(ImageError) as excinfo:
        VOCDetection(root).load_raw(0)
    assert "<size> 30x40" in _one_line_error(excinfo, "img1.jpg")
