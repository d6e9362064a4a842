"""The packaged training recipes: YAML files shipped inside the package.

A recipe is named by its file stem (``retinanet_spinenet49s_coco``). Its one-line description is
a leading ``# description: ...`` comment, so the strict config loader never sees it.
Anywhere a CONFIG is taken, either a path to a YAML file or a packaged name works.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from scaledet.errors import MissingFileError

__all__ = ["PackagedConfig", "list_configs", "packaged_config_path", "resolve_config"]

_DESCRIPTION = re.compile(r"^#\s*description:\s*(.+?)\s*$")


@dataclass(frozen=True)
class PackagedConfig:
    name: str
    description: str
    path: Path


def _folder() -> Path:
    # The package is always installed as plain files (setuptools package data), never zipped.
    return Path(str(resources.files(__name__)))


def _description(path: Path) -> str:
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        match = _DESCRIPTION.match(line)
        if match:
            return match.group(1)
    return ""


def list_configs() -> list[PackagedConfig]:
    """Every packaged recipe, sorted by name."""
    return [PackagedConfig(p.stem, _description(p), p) for p in sorted(_folder().glob("*.yaml"))]


def packaged_config_path(name: str) -> Path | None:
    """The file of a packaged recipe (``name`` with or without ``.yaml``), or None."""
    stem = name[:-5] if name.endswith(".yaml") else name
    if not stem or "/" in stem or "\\" in stem:
        return None
    path = _folder() / f"{stem}.yaml"
    return path if path.is_file() else None


def resolve_config(name_or_path: str | Path) -> Path:
    """An existing YAML file as given, else the packaged recipe of that name.

    A path that exists wins over a packaged name, so a local edit of a recipe is never shadowed.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    packaged = packaged_config_path(str(name_or_path))
    if packaged is not None:
        return packaged
    names = ", ".join(c.name for c in list_configs())
    raise MissingFileError(f"config {str(name_or_path)!r}: no such file and no packaged config of that name "
                            f"(packaged: {names}; see `scaledet configs`)")
