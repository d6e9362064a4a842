"""Table-driven model registration: each registered variant is one row of defaults.

A family declares a frozen dataclass whose keyword-only fields are the create_model arguments
it owns (the positional ones say what the variant *is*, e.g. its SpineNet scaling), a table of
rows, and a two-line registered function per row (``timm``'s ``_create_*`` pattern; the rows
play the part of tensorflow/tpu's scaling map)::

    @register_model(forwards_to=(Row, build_family))
    def family_variant(**kwargs) -> Detector:
        return create_family("family_variant", **kwargs)

``register_model(forwards_to=...)`` lists the row's fields and ``build_family``'s keyword-only
parameters as the variant's arguments, so create_model validates them and names the allowed ones.
"""
from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, Mapping, TypeVar

from scaledet.models.common import NormSettings, norm_settings

Row = TypeVar("Row")


def apply_overrides(row: Row, overrides: Mapping[str, Any]) -> tuple[Row, dict[str, Any]]:
    """``row`` with the overrides that name its fields, and the remaining overrides.

    A field whose default is :class:`NormSettings` takes a mapping too, and ``None`` keeps the
    row's value (:func:`~scaledet.models.common.norm_settings`)."""
    defaults = {f.name: getattr(row, f.name) for f in fields(row)}
    changes = {name: norm_settings(value, defaults[name]) if isinstance(defaults[name], NormSettings) else value
               for name, value in overrides.items() if name in defaults}
    rest = {name: value for name, value in overrides.items() if name not in defaults}
    return replace(row, **changes), rest
