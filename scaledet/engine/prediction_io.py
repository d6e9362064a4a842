"""Turning predictions into files: a JSON of detections and drawn images, or a COCO results file."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import torch
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks
from tqdm import tqdm

from scaledet.data.images import load_image
from scaledet.errors import DataError, MissingFileError, OutputError, UsageError
from scaledet.utils.atomic import atomic_path, check_writable, write_json

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    images: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise MissingFileError(f"{item}: folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            images.extend(found)
        elif item.is_file():
            images.append(item)
        else:
            raise MissingFileError(f"{item}: no such image file or folder")
    return images


def predictor_for(backend: str, *, checkpoint: str | None, onnx_model: str | None, device: str = "auto",
                  optimize: bool = True, precision: str = "fp32"):
    """An object with ``predict(images, score_threshold=, image_size=, batch_size=)`` and ``class_names``.
    ``precision="bf16"`` (torch backend): the deployment copy in bfloat16."""
    if backend == "onnxruntime":
        if not onnx_model:
            raise UsageError("--backend onnxruntime needs --model MODEL.onnx")
        from scaledet.export.onnx_predictor import OnnxPredictor

        if precision != "fp32":
            raise UsageError(f"--precision {precision} applies to the torch backend; for a smaller, faster ONNX "
                             "model export it with `scaledet export --int8`")
        return OnnxPredictor(onnx_model)
    if not checkpoint:
        raise UsageError("--backend torch needs --checkpoint CKPT")
    from scaledet.engine.distributed import resolve_device
    from scaledet.engine.inference import model_from_checkpoint

    model = model_from_checkpoint(checkpoint, resolve_device(device))
    if not optimize and precision != "fp32":
        raise UsageError(f"--precision {precision} runs the deployment copy; it cannot go with --no-optimize")
    return model.optimized_for_inference(precision=precision) if optimize else model


def _palette(n: int) -> list[tuple[int, int, int]]:
    g = torch.Generator().manual_seed(1)
    return [tuple(int(c) for c in torch.randint(40, 256, (3,), generator=g)) for _ in range(max(n, 1))]


def draw(image: torch.Tensor, det: dict, class_names: Sequence[str] | None) -> torch.Tensor:
    names = list(class_names or [])
    colours = _palette(max(len(names), int(det["labels"].max()) + 1 if len(det["labels"]) else 1) + 1)
    if "masks" in det:
        seg = det["masks"]
        classes = [c for c in seg.unique().tolist() if 0 < c < 255]
        if classes:
            stack = torch.stack([seg == c for c in classes])
            image = draw_segmentation_masks(image, stack, alpha=0.45, colors=[colours[c] for c in classes])
    if len(det["boxes"]) == 0:
        return image
    labels = [f"{names[int(l)] if int(l) < len(names) else int(l)} {float(s):.2f}"
              for l, s in zip(det["labels"], det["scores"])]
    return draw_bounding_boxes(image, det["boxes"], labels=labels, colors=[colours[int(l)] for l in det["labels"]],
                               width=max(2, image.shape[-1] // 300))


def output_names(images: Sequence[Path]) -> list[str]:
    """A distinct drawing name per image: its stem, with ``_2``, ``_3``... when two inputs share
    one (``a.jpg`` and ``a.png``, or ``a.jpg`` in two folders)."""
    taken: dict[str, int] = {}
    names = []
    for path in images:
        stem = path.stem
        count = taken.get(stem.lower(), 0) + 1
        taken[stem.lower()] = count
        names.append(stem if count == 1 else f"{stem}_{count}")
    return names


def _planned_outputs(out_dir: Path, images: Sequence[Path], names: list[str], has_mask: bool,
                     overwrite: bool) -> None:
    """Refuse, before any work, to write over an input (ever) or an existing file (without
    ``overwrite``)."""
    planned = [out_dir / "detections.json"] + [out_dir / f"{n}.png" for n in names]
    if has_mask:
        planned += [out_dir / f"{n}_mask.png" for n in names]
    inputs = {p.resolve() for p in images}
    for target in planned:
        if target.resolve() in inputs:
            raise OutputError(f"{target}: is one of the input images; predict never writes over its inputs "
                              f"(choose another --output)")
        check_writable(target, overwrite, "file")


def _predict_each(predictor, chunk: Sequence[Path], **kwargs) -> list[dict | str]:
    """Detections per image, or the error (one line) of an image that cannot be used; a bad
    image costs only itself, not its batch."""
    try:
        return predictor.predict(list(chunk), **kwargs)
    except DataError:
        if len(chunk) == 1:
            raise
    results: list[dict | str] = []
    for path in chunk:
        try:
            results.append(predictor.predict([path], **kwargs)[0])
        except DataError as err:
            results.append(str(err).splitlines()[0])
    return results


def write_predictions(predictor, images: Sequence[Path], output: str | Path, *, score_threshold: float,
                      image_size: int | None = None, batch_size: int = 4, progress: bool = True,
                      overwrite: bool = False) -> Path:
    """``detections.json`` (one entry per image; an image that cannot be read has ``error``
    and no detections) and a drawing per image. Nothing is written over an input, nor over an
    existing file unless ``overwrite``; every file is written atomically."""
    from PIL import Image

    if not math.isfinite(score_threshold):
        raise UsageError(f"the score threshold must be a finite number, got {score_threshold}")
    out_dir = Path(output)
    names = output_names(images)
    _planned_outputs(out_dir, images, names, predictor.has_mask, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    class_names = predictor.class_names
    records = []
    for start in tqdm(range(0, len(images), batch_size), desc="predict", disable=not progress, dynamic_ncols=True):
        chunk = images[start:start + batch_size]
        dets = _predict_each(predictor, chunk, score_threshold=score_threshold, image_size=image_size,
                             batch_size=batch_size)
        for path, stem, det in zip(chunk, names[start:start + batch_size], dets):
            if isinstance(det, str):
                records.append({"image": str(path), "detections": [], "error": det})
                continue
            drawn = draw(load_image(path), det, class_names)
            drawing = out_dir / f"{stem}.png"
            with atomic_path(drawing) as tmp:
                Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(tmp, format="PNG")
            entry = {"image": str(path), "drawing": str(drawing), "detections": [
                {"box_xyxy": [round(float(v), 2) for v in box], "score": round(float(s), 4), "label": int(l),
                 "class_name": class_names[int(l)] if class_names and int(l) < len(class_names) else str(int(l))}
                for box, s, l in zip(det["boxes"], det["scores"], det["labels"])]}
            if "masks" in det:
                mask_path = out_dir / f"{stem}_mask.png"
                with atomic_path(mask_path) as tmp:
                    Image.fromarray(det["masks"].to(torch.uint8).numpy(), mode="L").save(tmp, format="PNG")
                entry["mask"] = str(mask_path)
            records.append(entry)
    return write_json(out_dir / "detections.json", records)


def coco_image_ids(images: Sequence[Path], annotations: str | Path | None) -> tuple[list[int], set[int] | None]:
    """The COCO image id of each image, and the category ids the annotation file defines.

    With ``annotations`` an image is found by its file name among the file's images; without,
    the file name must be a COCO-style number (``000000000139.jpg`` -> 139)."""
    if annotations is None:
        bad = [p.name for p in images if not p.stem.isdigit()]
        if bad:
            raise UsageError(f"--format coco: {bad[0]} has no numeric COCO file name to take an image id from; "
                             "give --annotations FILE.json to look the ids up by file name")
        return [int(p.stem) for p in images], None
    path = Path(annotations)
    if not path.is_file():
        raise MissingFileError(f"{path}: annotation file not found")
    try:
        dataset = json.loads(path.read_text())
        by_name = {Path(image["file_name"]).name: int(image["id"]) for image in dataset["images"]}
        categories = {int(category["id"]) for category in dataset["categories"]}
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a COCO annotation file with images (id, file_name) and categories "
                        f"({type(err).__name__}: {err})") from None
    missing = [p.name for p in images if p.name not in by_name]
    if missing:
        raise DataError(f"{path}: {len(missing)} of the images are not in it by file name, e.g. {missing[0]}")
    return [by_name[p.name] for p in images], categories


def write_coco_results(predictor, images: Sequence[Path], output: str | Path, *, annotations: str | Path | None,
                       score_threshold: float | None = None, image_size: int | None = None, batch_size: int = 4,
                       progress: bool = True, overwrite: bool = False) -> Path:
    """``OUTPUT/coco_results.json``: the COCO results format (xywh boxes in original pixels, the
    data set's category ids through the model's ``label_to_category_id``), which
    ``scaledet eval-results coco`` and pycocotools read. An existing file is refused before any
    work unless ``overwrite``."""
    from scaledet.eval.coco import detections_to_coco_results

    path = Path(output) / "coco_results.json"
    check_writable(path, overwrite, "COCO results file")

    label_map = predictor.label_to_category_id
    if label_map is None:
        raise UsageError("--format coco: the model has no label map (label_to_category_id) giving data set "
                         "category ids; use a checkpoint trained by scaledet on COCO-format data")
    image_ids, categories = coco_image_ids(images, annotations)
    unknown = sorted(set(label_map) - categories) if categories is not None else []
    if unknown:
        raise DataError(f"{annotations}: the model's category ids {unknown[:5]} are not among its categories; "
                        "is it the annotation file of the model's data set?")
    results = []
    for start in tqdm(range(0, len(images), batch_size), desc="predict", disable=not progress, dynamic_ncols=True):
        dets = predictor.predict(images[start:start + batch_size], score_threshold=score_threshold,
                                 image_size=image_size, batch_size=batch_size)
        for image_id, det in zip(image_ids[start:start + batch_size], dets):
            results.extend(detections_to_coco_results(image_id, det["boxes"], det["scores"], det["labels"], label_map))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, results, indent=None)
    return path


def failed_images(detections_json: Path) -> list[str]:
    """``image: error`` lines of the entries that could not be predicted."""
    return [f"{r['image']}: {r['error']}" for r in json.loads(detections_json.read_text()) if "error" in r]
