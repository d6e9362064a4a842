"""The one model registry: ``create_model(name, ...)`` and ``list_models()``.

Builders are ordinary functions with typed keyword arguments; they construct parts as objects
and pass them to detector constructors. Registering is the only thing done by name.
"""
from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Callable, Sequence

import torch.nn as nn

from scaledet.errors import ModelArgumentError, UnknownModelError

if TYPE_CHECKING:  # the detectors import this module to register themselves
    from scaledet.models.detectors.base import Detector

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
# builder name -> the callables its **kwargs are forwarded to (see register_model)
_FORWARDS_TO: dict[str, tuple[Callable[..., object], ...]] = {}


def register_model(fn: Callable[..., nn.Module] | None = None, *,
                   forwards_to: Callable[..., object] | Sequence[Callable[..., object]] | None = None):
    """Register a builder, as ``@register_model`` or ``@register_model(forwards_to=other)``.

    With ``forwards_to`` the builder takes ``**kwargs`` that it hands on to ``other`` (or to
    several callables, e.g. a table row's dataclass and the assembling function); the
    keyword-only parameters of each then count as the builder's arguments too (positional
    parameters are what the builder itself supplies).
    """

    def register(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is registered twice")
        if forwards_to is not None and not any(
                p.kind is p.VAR_KEYWORD for p in inspect.signature(builder).parameters.values()):
            raise TypeError(f"builder {name!r} uses forwards_to but takes no **kwargs")
        _BUILDERS[name] = builder
        if forwards_to is not None:
            _FORWARDS_TO[name] = tuple(forwards_to) if isinstance(forwards_to, Sequence) else (forwards_to,)
        return builder

    return register if fn is None else register(fn)


def _ensure_loaded() -> None:
    # Importing the detectors package runs every @register_model.
    import scaledet.models.detectors  # noqa: F401


def list_models() -> list[str]:
    _ensure_loaded()
    return sorted(_BUILDERS)


def model_builder(name: str) -> Callable[..., nn.Module]:
    _ensure_loaded()
    if name not in _BUILDERS:
        known = ", ".join(sorted(_BUILDERS))
        raise UnknownModelError(f"unknown model {name!r}; known models: {known}")
    return _BUILDERS[name]


def _keyword_names(fn: Callable[..., object], kinds: tuple[object, ...]) -> list[str]:
    return [p.name for p in inspect.signature(fn).parameters.values() if p.kind in kinds]


def builder_arguments(name: str) -> list[str]:
    """The keyword arguments a model's builder accepts (for config validation and help):
    its own, then those of the callables it forwards ``**kwargs`` to, in order, if any."""
    builder = model_builder(name)
    names = _keyword_names(builder, (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD))
    for target in _FORWARDS_TO.get(name, ()):
        names += [n for n in _keyword_names(target, (inspect.Parameter.KEYWORD_ONLY,)) if n not in names]
    return names


def builder_argument_types(name: str) -> dict[str, object]:
    """Type annotations of the arguments ``builder_arguments`` lists, where they can be resolved
    (so a config value of the wrong type is reported by name before the model is built)."""
    import typing

    builder = model_builder(name)
    types: dict[str, object] = {}
    for fn in (*_FORWARDS_TO.get(name, ()), builder):  # the builder's own annotations win
        try:
            hints = typing.get_type_hints(fn)
        except (NameError, TypeError):  # an annotation naming something not importable here
            continue
        types.update({k: v for k, v in hints.items() if k != "return"})
    allowed = set(builder_arguments(name))
    return {k: v for k, v in types.items() if k in allowed}


def create_model(name: str, **overrides) -> "Detector":
    """Build a registered model, e.g. ``create_model("retinanet_spinenet49s", num_classes=80)``."""
    builder = model_builder(name)
    allowed = builder_arguments(name)
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ModelArgumentError(
            f"model {name!r} got unknown argument(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}"
        )
    model = builder(**overrides)
    model.model_name = name
    return model
