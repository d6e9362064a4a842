"""Reading backbone weights: a local file, or a name in a weights scheme (``torchvision:...``).

A weights *spec* is either the path of a local PyTorch file or ``SCHEME:NAME``. Each scheme
resolves a name to a local file; :func:`register_weights_scheme` adds one (``torchvision`` is
built in). scaledet does not download unless the user opts in with ``$SCALEDET_ALLOW_DOWNLOAD=1``;
otherwise a name whose file is absent is a one-line error saying where to put the file.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import urlparse

import torch
import torch.nn as nn

from scaledet.errors import CheckpointError, DataError, MissingFileError, UsageError

log = logging.getLogger(__name__)

DOWNLOAD_ENV = "SCALEDET_ALLOW_DOWNLOAD"
# builder arguments that only say where a backbone's initial weights come from; a checkpoint holds
# the trained weights, so rebuilding a model from one must not read these files again
BACKBONE_WEIGHT_ARGS = ("pretrained_backbone", "pretrained_strict")

_SCHEMES: dict[str, Callable[[str], Path]] = {}


def register_weights_scheme(scheme: str) -> Callable[[Callable[[str], Path]], Callable[[str], Path]]:
    """Decorator: ``resolver(name) -> local file`` handles specs ``"{scheme}:{name}"``."""
    def add(resolver: Callable[[str], Path]) -> Callable[[str], Path]:
        _SCHEMES[scheme] = resolver
        return resolver
    return add


def weights_schemes() -> list[str]:
    return sorted(_SCHEMES)


def resolve_weights(spec: str | Path) -> Path:
    """The local file a weights spec names (a path is returned as it is)."""
    scheme, sep, name = str(spec).partition(":")
    if sep and scheme in _SCHEMES:
        return _SCHEMES[scheme](name)
    return Path(spec)


def _download_allowed() -> bool:
    return os.environ.get(DOWNLOAD_ENV, "") == "1"


@register_weights_scheme("torchvision")
def torchvision_weights_file(name: str) -> Path:
    """torchvision's file for a weights enum name (``ResNet50_Weights.IMAGENET1K_V1``), in the
    cache torchvision itself uses: ``torch.hub.get_dir()/checkpoints`` ($TORCH_HOME/hub/checkpoints),
    under the file name of the enum's URL."""
    import torchvision

    try:
        weights = torchvision.models.get_weight(name)
    except (KeyError, ValueError) as err:
        raise UsageError(f"torchvision:{name}: not a torchvision weights name such as "
                         f"ResNet50_Weights.IMAGENET1K_V1 ({err})") from None
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    path = cache / os.path.basename(urlparse(weights.url).path)
    if path.is_file():
        return path
    if _download_allowed():
        cache.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(weights.url, str(path))
        return path
    raise MissingFileError(f"torchvision:{name}: {path.name} is not in the torch hub cache {cache}; "
                           f"place it there (download {weights.url} to {path}, or point $TORCH_HOME at a folder "
                           f"whose hub/checkpoints holds it), or set {DOWNLOAD_ENV}=1 to let scaledet download it")


def load_state_dict_file(path: str | Path, what: str = "state dict") -> dict[str, torch.Tensor]:
    """A state dict read with ``weights_only=True``; ``{"model": ...}`` / ``{"state_dict": ...}``
    wrappers are unwrapped and DataParallel's ``module.`` prefixes removed. ``what`` names the
    file's role in error messages."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: {what} file not found (give the path of a local file, or a name such as "
                                "torchvision:ResNet50_Weights.IMAGENET1K_V1)")
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


@dataclass(frozen=True)
class LoadReport:
    """Keys of a loaded state dict that the model lacked (``unexpected``) or did not get (``missing``)."""

    path: str
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]


def _listed(keys: Iterable[str], limit: int = 12) -> str:
    keys = list(keys)
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_backbone_weights(module: nn.Module, spec: str | Path, *, strict: bool = True,
                          what: str = "pretrained backbone weights", drop_prefixes: tuple[str, ...] = ("fc.",)
                          ) -> LoadReport:
    """Load ``spec`` (a path or ``SCHEME:NAME``) into ``module``.

    Keys starting with ``drop_prefixes`` (an ImageNet classifier) are not part of a backbone and
    are dropped. A missing ``num_batches_tracked`` is not reported (a counter; FrozenBatchNorm2d
    has none). Any other missing or unexpected key is a :class:`CheckpointError` listing them,
    unless ``strict`` is False: then what matches is loaded and the rest logged as a warning."""
    path = resolve_weights(spec)
    state = {k: v for k, v in load_state_dict_file(path, what).items() if not k.startswith(drop_prefixes)}
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a shape that does not fit
        raise CheckpointError(f"{path}: {what} do not fit the backbone: "
                              f"{' '.join(str(err).split())}") from None
    missing = tuple(k for k in result.missing_keys if not k.endswith("num_batches_tracked"))
    report = LoadReport(str(path), missing, tuple(result.unexpected_keys))
    if missing or report.unexpected:
        message = (f"{path}: {what} do not match the backbone: {len(missing)} missing keys "
                   f"[{_listed(missing)}], {len(report.unexpected)} unexpected keys [{_listed(report.unexpected)}]")
        if strict:
            raise CheckpointError(message + "; set model.args.pretrained_strict: false to load the keys that match")
        log.warning("%s (loaded the rest: pretrained_strict is false)", message)
    else:
        log.info("%s: loaded all %d backbone tensors", path, len(state))
    return report
