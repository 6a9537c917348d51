"""The typed checks and the settings-field machinery every settings object is made of.

A check is ``check(value, name) -> value`` (normalised), raising ValueError/TypeError naming the
value and the fix a TOML file needs; :func:`setting` declares a settings field (its default, its
check, its TOML section) and :class:`_Settings` runs the checks when an object is made. Used by
:mod:`dynfit.config` and by the field registry (:mod:`dynfit.nn.registry`).
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import fields

from _dyncore import checks as _checks
from _dyncore.checks import ArgumentTypeError

# -------------------------------------------------------- typed checks: check(value, name) -> value
def _kind(value) -> str:
    kind = type(value).__name__
    return f"{value!r} ({'an' if kind[:1] in 'aeiou' else 'a'} {kind})"


def _key(name: str) -> str:
    """The TOML key of a check's name ('[train] epochs' -> 'epochs')."""
    return name.split()[-1]


# These adapters keep the schema's check(value, name) form (with .expects) and hand the judging
# to systems.checks, adding the fix a TOML file needs.
def is_int(minimum: int | None = None, optional: bool = False):
    """An integer (not a bool, not 2.5) >= minimum."""
    def check(value, name):
        return _checks.integer(
            name,
            value,
            minimum=minimum,
            optional=optional,
            fix=f"write a whole number{f' >= {minimum}' if minimum is not None else ''} without "
            f"quotes or decimals, e.g. {_key(name)} = {max(minimum or 0, 1)}",
        )

    check.expects = "integer"
    return check


def is_float(low: float | None = None, high: float | None = None, *, low_open: bool = False,
             high_open: bool = False, optional: bool = False):
    """A finite number (int or float, not a bool or string) in the given range (open or closed
    ends)."""
    bounds = {
        ("above" if low_open else "minimum"): low,
        ("below" if high_open else "maximum"): high,
    }
    bounds = {k: v for k, v in bounds.items() if v is not None}
    example = next(
        x
        for x in ((low + high) / 2 if None not in (low, high) else 0.01, 1.0, 10.0, low, high)
        if x is not None
        and (low is None or (x > low if low_open else x >= low))
        and (high is None or (x < high if high_open else x <= high))
    )

    def check(value, name):
        return _checks.real(name, value, optional=optional, **bounds,
                            fix=f"write a number without quotes, e.g. {_key(name)} = {example:g}")
    check.expects = "number"
    return check


def is_order(value, name):
    """A finite-difference order: "auto" (chosen by the data) or an even integer >= 2."""
    if value == "auto":
        return value
    if isinstance(value, str):
        raise ValueError(f'{name} must be "auto" or an even whole number, got {_kind(value)}; '
                         f'e.g. {_key(name)} = "auto" or {_key(name)} = 12')
    value = is_int(2)(value, name)
    if value % 2:
        raise ValueError(f"{name} must be even (central differences), got {value}; "
                         f'write {value + 1}, {value - 1} or "auto"')
    return value


is_order.expects = '"auto" or an even integer'


def is_bool(value, name):
    """true or false (booleans; "no", 0 and 1 are refused)."""
    return _checks.boolean(
        name, value, fix="write true or false without quotes (True/False in Python)"
    )


def is_bool_or_none(value, name):
    """True, False or None (automatic)."""
    return None if value is None else is_bool(value, name)


def is_str(choices=None, optional: bool = False):
    """A non-empty string, one of ``choices`` when given (a tuple, or a function returning one)."""
    def check(value, name):
        if value is None and optional:
            return None
        # no string check in systems.checks: only the config reads free text
        if not isinstance(value, str):
            raise ArgumentTypeError(
                f"{name} must be a non-empty string in quotes, got {_kind(value)}; "
                f'write it in quotes, e.g. {_key(name)} = "..."'
            )
        if not value.strip():
            raise ValueError(f"{name} must be a non-empty string in quotes, got {_kind(value)}")
        known = choices() if callable(choices) else choices
        if known is not None:
            _checks.choice(
                name,
                value,
                known,
                fix=f'write one of them in quotes, e.g. {_key(name)} = "{next(iter(known))}"',
            )
        return value
    return check


def one_of(choices):
    """One of a few fixed strings; the error names them and the close match."""
    def check(value, name):
        return _checks.choice(
            name,
            value,
            choices,
            fix=f'write one of them in quotes, e.g. {_key(name)} = "{choices[0]}"',
        )

    return check


def is_device(value, name):
    """cpu, cuda, cuda:N or auto (auto: cuda when available); None for auto."""
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"cpu|cuda|cuda:\d+|auto", value):
        raise (ValueError if isinstance(value, str) else ArgumentTypeError)(
            f"{name} must be 'cpu', 'cuda', 'cuda:N' (N a device number) or 'auto', got "
            f"{_kind(value)}; "
            f'write it in quotes, e.g. {_key(name)} = "cpu"'
        )
    return value


def is_torch_device(value, name):
    """A torch.device, or a device name (is_device) that this machine has; None or 'auto' ->
    None."""
    if type(value).__name__ == "device":
        return value
    value = is_device(value, name)
    if value in (None, "auto"):
        return None
    if value.startswith("cuda"):
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(value.split(":")[1]) if ":" in value else 0
        if index >= n:
            raise ValueError(
                f"device {value!r} was asked for but this machine has {n} CUDA device(s); use "
                "'cpu' or 'auto'"
            )
    return value


def is_dtype(value, name):
    """float32 or float64, as a name or a torch dtype; returns the name."""
    text = str(value).removeprefix("torch.") if type(value).__name__ == "dtype" else value
    return _checks.choice(
        name,
        text,
        ("float32", "float64"),
        fix=f'write {_key(name)} = "float32" or "float64" (torch.float32 / torch.float64 in '
        "Python)",
    )


def is_list(item, *, non_empty: bool = True):
    def check(value, name):
        if not isinstance(value, (list, tuple)) or (non_empty and not value):
            raise (ValueError if isinstance(value, (list, tuple)) else ArgumentTypeError)(
                f"{name} must be a{' non-empty' if non_empty else ''} list such as [1, 2], got "
                f"{_kind(value)}"
            )
        return [item(v, f"{name}[{i}]") for i, v in enumerate(value)]
    return check


# ------------------------------------------------------------------ settings fields
def setting(
    default,
    check=None,
    *,
    toml: str | None = None,
    toml_check=None,
    toml_default=dataclasses.MISSING,
):
    """A settings field: its default, its check, and the TOML section whose key of the same name it
    is.

    toml_check / toml_default: where a config file asks more than Python (``[train] epochs`` >= 1,
    default 30, against ``fit``'s >= 0 and 100).
    """
    meta = {"check": check, "toml": toml, "toml_check": toml_check or check,
            "toml_default": default if toml_default is dataclasses.MISSING else toml_default}
    return dataclasses.field(default=default, metadata=meta)


class _Settings:
    """Runs every field's check when an object is made (also by ``dataclasses.replace``)."""

    def __post_init__(self):
        for f in fields(self):
            check = f.metadata.get("check")
            if check is not None:
                object.__setattr__(self, f.name, check(getattr(self, f.name), f.name))

    def replace(self, **changes):
        """A copy with ``changes`` (checked)."""
        return dataclasses.replace(self, **changes)
