"""Where a config's data paths point, so a packaged recipe works on any machine.

Relative data paths are taken under ``data.root``; a relative (or unset) ``data.root`` is itself
taken under ``$SCALEDET_DATA_ROOT``, else under the current folder. So with the COCO recipes'
``root: coco`` and ``train_images: train2017``, ``SCALEDET_DATA_ROOT=/data`` reads
``/data/coco/train2017``, and ``--set data.root=/elsewhere/coco`` reads ``/elsewhere/coco/train2017``.
VOC split lists given as ``.txt`` files (``ImageSets/Segmentation/train_aug.txt``) are data paths
too; split names (``train``, ``Segmentation/val``) are looked up inside the VOC folder as before.
Synthetic data is left alone: its ``root`` is where it is generated.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Mapping

from scaledet.config import DataConfig
from scaledet.errors import MissingFileError

DATA_ROOT_ENV = "SCALEDET_DATA_ROOT"
PATH_KEYS = ("train_images", "train_annotations", "val_images", "val_annotations", "train_pattern", "val_pattern",
             "extra_masks_dir")
SPLIT_KEYS = ("train_split", "val_split")
# Paths each format reads that must exist before a data set is built (tfrecord patterns are globs).
_REQUIRED = {
    "coco": {"train": ("train_images", "train_annotations"), "val": ("val_images", "val_annotations")},
    "voc": {"train": ("root", "extra_masks_dir"), "val": ("root",)},
}


def _under(base: Path, value: str) -> str:
    return str(base / Path(value).expanduser())  # an absolute value stays as it is


def resolve_data_paths(cfg: DataConfig, *, train: bool = True, val: bool = True,
                       environ: Mapping[str, str] | None = None) -> DataConfig:
    """``cfg`` with every data path absolute; a path the asked-for splits read that does not
    exist is a one-line ``FileNotFoundError`` naming the key, the resolved path and how it was formed."""
    if cfg.format == "synthetic":
        return cfg
    env = (os.environ if environ is None else environ).get(DATA_ROOT_ENV) or None
    base = Path(env).expanduser() if env else Path.cwd()
    root = Path(_under(base, cfg.root)) if cfg.root else base
    changes = {"root": str(root)}
    changes.update({key: _under(root, getattr(cfg, key)) for key in PATH_KEYS if getattr(cfg, key)})
    changes.update({key: _under(root, getattr(cfg, key)) for key in SPLIT_KEYS
                    if getattr(cfg, key) and str(getattr(cfg, key)).endswith(".txt")})
    resolved = dataclasses.replace(cfg, **changes)
    wanted = _REQUIRED.get(cfg.format, {})
    for key in (*(wanted.get("train", ()) if train else ()), *(wanted.get("val", ()) if val else ())):
        value = getattr(resolved, key)
        if value and not Path(value).exists():
            raise MissingFileError(f"data.{key}: {value} not found ({_how(cfg, key, env)})")
    return resolved


def _how(cfg: DataConfig, key: str, env: str | None) -> str:
    given = cfg.root if key == "root" else getattr(cfg, key)
    if Path(given).expanduser().is_absolute():
        return f"data.{key} is an absolute path"
    base = f"${DATA_ROOT_ENV}={env}" if env else f"the current folder, as ${DATA_ROOT_ENV} is not set"
    if key == "root":
        how = f"data.root {given!r} taken under {base}"
    elif not cfg.root:
        how = f"{given!r} taken under {base} (data.root is not set)"
    elif Path(cfg.root).expanduser().is_absolute():
        how = f"{given!r} taken under data.root"
    else:
        how = f"{given!r} taken under data.root {cfg.root!r}, itself under {base}"
    return f"{how}; set data.root with --set data.root=... or ${DATA_ROOT_ENV}"
