"""Checkpoints: written atomically (temp file, fsync, rename), read with ``weights_only=True``."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scaledet.errors import CheckpointError
from scaledet.utils.atomic import atomic_open

__all__ = ["FORMAT", "CheckpointError", "save_atomic", "nonfinite_entries",
           "load_checkpoint", "capture_rng", "restore_rng"]

FORMAT = "scaledet-checkpoint-v1"


def save_atomic(payload: dict[str, Any], path: str | Path) -> Path:
    """Never leaves a half-written file at ``path``: a kill or a full disk mid-save keeps the
    previous one (scaledet/utils/atomic.py). A payload holding a non-finite floating tensor is
    refused, so no checkpoint ever carries NaN/inf weights or statistics."""
    path = Path(path)
    with atomic_open(path, "wb") as f:
        bad = nonfinite_entries(payload)  # checked before a byte is written (the temp file is dropped)
        if bad:
            raise CheckpointError(f"{path}: not saved: non-finite values in {', '.join(bad[:3])}"
                                  + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
                                  + "; the previous file there, if any, is kept")
        torch.save(payload, f)
    return path


def nonfinite_entries(payload: Any, prefix: str = "") -> list[str]:
    """Names of the floating tensors in a (nested) checkpoint payload holding NaN or inf.
    Optimizer state is included: a NaN momentum buffer would poison the weights after resume."""
    if isinstance(payload, torch.Tensor):
        if not payload.is_floating_point() or not payload.numel():
            return []
        # a NaN or inf element makes the sum non-finite: one fast reduction for the common case,
        # the element-wise test only when the sum might merely have overflowed
        if bool(torch.isfinite(payload.sum())) or bool(torch.isfinite(payload).all()):
            return []
        return [prefix or "tensor"]
    if isinstance(payload, dict):
        items = payload.items()
    elif isinstance(payload, (list, tuple)):
        items = enumerate(payload)
    else:
        return []
    found: list[str] = []
    for key, value in items:
        if key == "rng":  # random-number states are bit patterns, not numbers
            continue
        found += nonfinite_entries(value, f"{prefix}.{key}" if prefix else str(key))
    return found


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''})") from err
    if not isinstance(payload, dict) or "model" not in payload:
        raise CheckpointError(f"{path}: not a scaledet checkpoint (no 'model' entry)")
    return payload


def capture_rng() -> dict[str, Any]:
    """All random-number states as tensors and plain types (loadable with weights_only)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": _python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_state_to_plain(state):
    version, internal, gauss = state
    return [version, list(internal), gauss]
