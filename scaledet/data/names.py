"""File names read from annotation files stay inside the data folder.

A COCO ``file_name`` or a VOC image id is joined under the data set's folder; an absolute name
or one with ``..`` would read any file on the machine. Such names are refused unless the config
says ``data.allow_outside_root: true`` (for data sets that knowingly point elsewhere).
"""
from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath

from scaledet.errors import DataError


def contained_name(name: str, where: str, allow_outside: bool = False) -> str:
    """``name`` unchanged when it stays under the folder it is joined to; else a DataError."""
    if allow_outside:
        return name
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or ".." in windows.parts:
        raise DataError(f"{where}: {name!r} points outside the data folder (an absolute path or '..'); "
                        f"set data.allow_outside_root=true if that is meant")
    return name
