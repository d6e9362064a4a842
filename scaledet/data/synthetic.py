"""A small, learnable COCO-format shapes data set (the default for ``scaledet demo`` and tests).

Each image has a few filled shapes (circle, square, triangle, cross, star) with random colours
on a noisy gradient / blotchy background. The class is defined by the shape, never by the
colour. Objects are placed large-first, so smaller shapes may partly hide bigger ones (at most
``max_occlusion`` of any shape), and drawing the ``segmentation`` polygons in annotation order
reproduces the visible masks. Boxes are tight around the visible pixels; ``area`` counts them.
Every image is drawn from its own RNG stream ``(seed, split, index)``, so output is
deterministic and does not depend on how many images are requested.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from scaledet.errors import UsageError
from scaledet.utils.atomic import write_json

__all__ = ["SHAPE_NAMES", "SyntheticSpec", "SyntheticPaths", "make_synthetic_coco", "render_image"]

SHAPE_NAMES = ("circle", "square", "triangle", "cross", "star")
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class SyntheticSpec:
    class_names: tuple[str, ...] = SHAPE_NAMES
    min_objects: int = 2
    max_objects: int = 6
    min_size_frac: float = 16 / 256   # shape extent relative to the image side
    max_size_frac: float = 0.5
    min_size_px: float = 12.0         # floor for small images, so shapes stay recognisable
    max_occlusion: float = 0.35       # largest hidden fraction of any shape
    max_rotation_deg: float = 20.0    # small, so a square never turns into a diamond
    max_aspect: float = 1.25          # width/height stretch of a shape
    noise_std: float = 6.0            # sensor noise, in 8-bit levels
    min_contrast: float = 90.0        # RGB distance of a shape's colour to the background
    image_format: str = "jpg"         # "jpg" or "png"
    jpeg_quality: int = 92

    def __post_init__(self) -> None:
        unknown = set(self.class_names) - set(SHAPE_NAMES)
        if unknown:
            raise UsageError(f"unknown shapes {sorted(unknown)}; choose from {SHAPE_NAMES}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise UsageError("need 1 <= min_objects <= max_objects")
        if not 0 < self.min_size_frac <= self.max_size_frac <= 1:
            raise UsageError("need 0 < min_size_frac <= max_size_frac <= 1")
        if self.image_format not in ("jpg", "png"):
            raise UsageError(f"image_format must be 'jpg' or 'png', got {self.image_format!r}")


@dataclass(frozen=True)
class SyntheticPaths:
    root: Path
    train_images: Path
    val_images: Path
    train_json: Path
    val_json: Path
    class_names: tuple[str, ...] = field(default=SHAPE_NAMES)


def _unit_polygon(shape: str) -> np.ndarray:
    """Outline in [-1, 1]^2, as (K, 2) xy."""
    if shape == "circle":
        angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        return np.stack([np.cos(angles), np.sin(angles)], 1)
    if shape == "square":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float)
    if shape == "triangle":
        return np.array([[0, -1], [1, 1], [-1, 1]], float)
    if shape == "cross":
        t = 0.34
        return np.array([[-t, -1], [t, -1], [t, -t], [1, -t], [1, t], [t, t], [t, 1], [-t, 1],
                         [-t, t], [-1, t], [-1, -t], [-t, -t]], float)
    if shape == "star":
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)
    raise UsageError(f"unknown shape {shape!r}")


_UNIT_POLYGONS = {name: _unit_polygon(name) for name in SHAPE_NAMES}


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Float32 HxWx3: a two-colour gradient blended with coarse colour blotches."""
    c0, c1 = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    coords = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    ramp = np.float32(np.cos(angle)) * coords[None, :] + np.float32(np.sin(angle)) * coords[:, None] + 0.5
    gradient = c0 + (c1 - c0) * ramp[..., None]
    cells = int(rng.integers(3, 9))
    coarse = rng.uniform(0, 255, (cells, cells, 3)).astype(np.uint8)
    blotches = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), np.float32)
    mix = np.float32(rng.uniform(0.3, 0.8))
    return mix * gradient + (1 - mix) * blotches


def _pick_colour(rng: np.random.Generator, under: np.ndarray, min_contrast: float) -> np.ndarray:
    best, best_dist = None, -1.0
    for _ in range(12):
        colour = rng.uniform(0, 255, 3)
        dist = float(np.linalg.norm(colour - under))
        if dist >= min_contrast:
            return colour
        if dist > best_dist:
            best, best_dist = colour, dist
    return best


def render_image(rng: np.random.Generator, size: int, spec: SyntheticSpec) -> tuple[np.ndarray, list[dict]]:
    """One uint8 HxWx3 image and its objects: dicts with label, bbox (xywh), area, polygon."""
    canvas = _background(rng, size)
    owner = np.full((size, size), -1, np.int16)
    num = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    hi = spec.max_size_frac * size
    lo = min(max(spec.min_size_frac * size, spec.min_size_px), hi)
    extents = np.sort(np.exp(rng.uniform(np.log(lo), np.log(hi), num)))[::-1]  # large first
    objects: list[dict] = []
    full_area: list[int] = []
    visible = np.zeros(0, np.int64)
    for extent in extents:
        label = int(rng.integers(len(spec.class_names)))
        aspect = math.exp(rng.uniform(-math.log(spec.max_aspect), math.log(spec.max_aspect)))
        theta = math.radians(rng.uniform(-spec.max_rotation_deg, spec.max_rotation_deg))
        rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        half = np.array([extent / 2 * math.sqrt(aspect), extent / 2 / math.sqrt(aspect)])
        outline = (_UNIT_POLYGONS[spec.class_names[label]] * half) @ rot.T
        span_lo, span_hi = outline.min(0), outline.max(0)
        for _ in range(20):  # placements that would hide too much of an earlier shape are retried
            centre = rng.uniform(-span_lo, size - span_hi)
            polygon = outline + centre
            mask_img = Image.new("L", (size, size), 0)
            ImageDraw.Draw(mask_img).polygon([tuple(p) for p in polygon], fill=1)
            mask = np.asarray(mask_img, bool)
            hidden = np.bincount(owner[mask & (owner >= 0)], minlength=len(objects))
            if np.all(visible - hidden >= (1 - spec.max_occlusion) * np.asarray(full_area)):
                break
        else:
            continue
        area = int(mask.sum())
        if area == 0:
            continue
        visible = visible - hidden
        visible = np.append(visible, area)
        full_area.append(area)
        owner[mask] = len(objects)
        under = canvas[mask].mean(0)
        canvas[mask] = _pick_colour(rng, under, spec.min_contrast)
        objects.append({"label": label, "polygon": polygon})

    canvas += np.float32(spec.noise_std) * rng.standard_normal(canvas.shape, dtype=np.float32)
    image = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
    for k, obj in enumerate(objects):
        ys, xs = np.nonzero(owner == k)
        x0, y0 = int(xs.min()), int(ys.min())
        obj["bbox"] = [float(x0), float(y0), float(xs.max() + 1 - x0), float(ys.max() + 1 - y0)]
        obj["area"] = float(len(xs))
    return image, objects


def _write_split(out_dir: Path, split: str, split_index: int, count: int, image_size: int,
                 seed: int, spec: SyntheticSpec, info: dict) -> dict:
    image_dir = out_dir / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        rng = np.random.default_rng([seed, split_index, i])
        pixels, objects = render_image(rng, image_size, spec)
        file_name = f"{i:06d}.{spec.image_format}"
        pil = Image.fromarray(pixels, "RGB")
        if spec.image_format == "jpg":
            pil.save(image_dir / file_name, quality=spec.jpeg_quality)
        else:
            pil.save(image_dir / file_name, compress_level=1)
        image_id = i + 1
        images.append({"id": image_id, "file_name": file_name, "width": image_size, "height": image_size})
        for obj in objects:
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": obj["label"] + 1,
                "bbox": obj["bbox"], "area": obj["area"], "iscrowd": 0,
                "segmentation": [np.round(obj["polygon"], 2).reshape(-1).tolist()],
            })
    categories = [{"id": k + 1, "name": name, "supercategory": "shape"}
                  for k, name in enumerate(spec.class_names)]
    return {"info": info, "images": images, "annotations": annotations, "categories": categories}


def make_synthetic_coco(out_dir: str | Path, *, num_train: int = 256, num_val: int = 64,
                        image_size: int = 256, seed: int = 0, spec: SyntheticSpec | None = None,
                        overwrite: bool = False) -> SyntheticPaths:
    """Write ``train/``, ``val/`` and ``annotations/instances_{train,val}.json`` under ``out_dir``.

    An existing folder made with the same arguments is reused unless ``overwrite``.
    """
    spec = spec or SyntheticSpec()
    if image_size < 32:
        raise UsageError(f"image_size must be at least 32, got {image_size}")
    root = Path(out_dir)
    paths = SyntheticPaths(root=root, train_images=root / "train", val_images=root / "val",
                           train_json=root / "annotations" / "instances_train.json",
                           val_json=root / "annotations" / "instances_val.json",
                           class_names=tuple(spec.class_names))
    info = {"description": "scaledet synthetic shapes", "version": _FORMAT_VERSION, "seed": seed,
            "image_size": image_size, "num_train": num_train, "num_val": num_val,
            "spec": json.loads(json.dumps(asdict(spec)))}
    if not overwrite and _is_complete(paths, info):
        return paths
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split, index, count, json_path in (("train", 0, num_train, paths.train_json),
                                           ("val", 1, num_val, paths.val_json)):
        data = _write_split(root, split, index, count, image_size, seed, spec, info)
        write_json(json_path, data, indent=None)  # the json appears last: a half-written folder is never reused
    return paths


def _is_complete(paths: SyntheticPaths, info: dict) -> bool:
    for json_path, image_dir in ((paths.train_json, paths.train_images), (paths.val_json, paths.val_images)):
        if not json_path.is_file():
            return False
        try:
            data = json.loads(json_path.read_text())
        except (OSError, ValueError):
            return False
        if data.get("info") != info:
            return False
        if not all((image_dir / img["file_name"]).is_file() for img in data["images"]):
            return False
    return True
