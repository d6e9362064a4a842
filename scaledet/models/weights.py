"""Reading weights from a local file the user names (scaledet never downloads)."""
from __future__ import annotations

from pathlib import Path

import torch

from scaledet.errors import DataError, MissingFileError


def load_state_dict_file(path: str | Path, what: str = "state dict") -> dict[str, torch.Tensor]:
    """A state dict read with ``weights_only=True``; ``{"model": ...}`` / ``{"state_dict": ...}``
    wrappers are unwrapped and DataParallel's ``module.`` prefixes removed. ``what`` names the
    file's role in error messages."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: {what} file not found (scaledet never downloads; give the path "
                                "of a local file)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the file name
        raise DataError(f"{path}: not a loadable PyTorch state dict ({str(err).splitlines()[0]})") from err
    for wrapper in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{path}: expected a {what} (a dict of tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}
