"""The field registry: every field kind, the settings that choose one, the default,
and ``build_field``.

A field class registers itself under its kind with :func:`register_field` (a decorator in the
field's own module); ``build_field({"kind": ..., **options}, dim)`` builds it. Kinds that take
state vectors (B, dim) are the ones ``fit`` and a ``[field]`` table may name (``FieldSettings``);
the others (``"conv"``: images (B, C, H, W)) are built from a config only. ``"auto"`` is not a
class: ``fit`` resolves it on the data (:func:`dynfit.selection.auto_field_config`).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from systems import checks

from .._settings import _Settings, is_bool, is_int, is_str, setting

__all__ = ["FIELD_KINDS", "DEFAULT_FIELD", "COMPARE_FIELD", "FieldSettings", "build_field",
           "register_field"]

# kind -> field class, filled by register_field as the field modules are imported (dynfit.nn)
FIELD_KINDS: dict[str, type] = {}
_VECTOR_KINDS: list[str] = []  # the kinds whose fields take state vectors (B, dim)
_AUTO_KIND = "auto"  # the library chosen on the data, then a neural correction
_KIND_WITHOUT_NAME = "mlp"  # the kind of a config dict that names none


def register_field(kind: str, *, vector: bool = True):
    """Class decorator: register a field class under ``kind``; ``vector``: it takes states
    (B, dim)."""
    def register(cls: type) -> type:
        if kind in FIELD_KINDS or kind == _AUTO_KIND:
            raise ValueError(f"field kind {kind!r} is already registered "
                             f"(by {FIELD_KINDS.get(kind)}); pick another name")
        FIELD_KINDS[kind] = cls
        if vector:
            _VECTOR_KINDS.append(kind)
        return cls
    return register


def _vector_kinds() -> tuple[str, ...]:
    """The kinds ``fit`` may name: "auto", then the registered kinds on state vectors."""
    return (_AUTO_KIND, *_VECTOR_KINDS)


def build_field(config: dict, dim: int, dtype=torch.float64) -> torch.nn.Module:
    """A vector field from a config {"kind": one of FIELD_KINDS, **the class's keyword arguments}.

    dim: the state dimension (channels for "conv"). A config without "kind" is an "mlp".
    """
    if not isinstance(config, dict):
        raise TypeError(f"field config must be a dict like {{'kind': 'mlp', 'width': 64}}, "
                        f"got {type(config).__name__}")
    options = dict(config)
    kind = options.pop("kind", _KIND_WITHOUT_NAME)
    checks.choice("field kind", kind, sorted(FIELD_KINDS))
    try:
        return FIELD_KINDS[kind](dim, dtype=dtype, **options)
    except TypeError as err:
        raise ValueError(f"bad option in field config {config!r}: {err}") from None


@dataclass(frozen=True)
class FieldSettings(_Settings):
    """The vector field's config ([field]; the dict :func:`build_field` takes, or kind
    "auto": the library chosen by the data, :func:`dynfit.selection.auto_field_config`).

    degree: the polynomial library's (kind "poly"; None: its default, 2), or the highest polynomial
    degree tried (kind "auto"; None: 5). correction: the neural part of kinds "auto"/"library",
    "mlp" or "residual" (None: "mlp").
    """
    kind: str = setting(_AUTO_KIND, is_str(_vector_kinds), toml="field")
    degree: int | None = setting(None, is_int(1, optional=True), toml="field")
    width: int = setting(32, is_int(0), toml="field")
    depth: int = setting(2, is_int(1), toml="field")
    activation: str = setting("silu", is_str(), toml="field")
    time_dependent: bool = setting(False, is_bool, toml="field")
    correction: str | None = setting(None, is_str(("mlp", "residual"), optional=True), toml="field")

    def config(self) -> dict:
        """The config dict (None values left out)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None}


DEFAULT_FIELD = FieldSettings().config()  # fit's field when none is given
# the field `dynfit compare` trains every strategy with (its [field] table's defaults)
COMPARE_FIELD = {"kind": "mlp", "width": 64, "depth": 2, "activation": "silu"}
