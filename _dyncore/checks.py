"""Argument checks shared by ``systems`` and ``dynfit``: one signature, one rule for exceptions.

Public as ``systems.checks`` (an alias of this module's names).

Every check is ``check(name, value, ...)`` and returns the value converted
(``int``, ``float``, a float64 array, ...), so a call site reads
``n = checks.integer("n_steps", n_steps, minimum=1)``.

The rule:

- a value of the wrong type (a string or a bool where a number is expected,
  2.5 where an integer is) raises :class:`ArgumentTypeError`, a ``TypeError``
  that is also a ``ValueError`` (so ``except ValueError`` catches every bad
  argument, as it did before the checks were gathered here);
- a value of the right type outside what is allowed (negative, NaN, not one of
  the choices, a wrong shape) raises ``ValueError``.

Messages name the argument and the bad value, say what was expected, and end
with the fix (``fix=`` overrides the default one).

``optional=True`` lets None through (returned as None) for a setting whose
None means "automatic"; ``real`` takes open bounds (``above``, ``below``) and
closed ones (``minimum``, ``maximum``) in any mix.
"""
from __future__ import annotations

import difflib
import math
import numbers
from typing import Iterable

import numpy as np

__all__ = ["ArgumentTypeError", "integer", "real", "positive", "choice", "boolean", "finite_array",
           "float_dtype"]


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (also a ValueError: every bad argument is one)."""


def _got(value) -> str:
    return f"{value!r} ({type(value).__name__})"


def _tail(fix: str | None, default: str) -> str:
    text = default if fix is None else fix
    return f"; {text}" if text else ""


def integer(name: str, value, *, minimum: int | None = None, maximum: int | None = None,
            optional: bool = False, fix: str | None = None) -> int | None:
    """``value`` as an int in [minimum, maximum] (bounds optional); bool and 2.0 are not ints."""
    if value is None and optional:
        return None
    if minimum is not None and maximum is not None:
        rng = f"in [{minimum}, {maximum}]"
    else:
        rng = (f">= {minimum}" if minimum is not None
               else f"<= {maximum}" if maximum is not None else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        within = f" {rng}" if rng else ""
        raise ArgumentTypeError(f"{name} must be an integer{within}, got {_got(value)}"
                                + _tail(fix, "give a whole number (no quotes, no decimals)"))
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {rng}, got {value!r}" + _tail(fix, ""))
    return int(value)


def real(name: str, value, *, minimum: float | None = None, maximum: float | None = None,
         above: float | None = None, below: float | None = None, optional: bool = False,
         fix: str | None = None) -> float | None:
    """``value`` as a finite float, > above, >= minimum, < below and <= maximum where given.

    Accepts ints, floats, numpy scalars and 0-d arrays; refuses bools and strings.
    """
    if value is None and optional:
        return None
    rng = " and ".join(x for x in (f"> {above:g}" if above is not None else "",
                                   f">= {minimum:g}" if minimum is not None else "",
                                   f"< {below:g}" if below is not None else "",
                                   f"<= {maximum:g}" if maximum is not None else "") if x)
    expected = "a finite number" + (f" {rng}" if rng else "")
    if above == 0 and minimum is None and maximum is None and below is None:
        expected = "a positive finite number (> 0)"
    v = None
    if not isinstance(value, (bool, str, bytes)) and value is not None and np.ndim(value) == 0:
        try:
            v = float(value)
        except (TypeError, ValueError):
            pass
    if v is None:
        raise ArgumentTypeError(f"{name} must be {expected}, got {_got(value)}"
                                + _tail(fix, "give a number (no quotes)"))
    if (not math.isfinite(v) or (above is not None and not v > above)
            or (minimum is not None and v < minimum) or (below is not None and not v < below)
            or (maximum is not None and v > maximum)):
        raise ValueError(f"{name} must be {expected}, got {value!r}" + _tail(fix, ""))
    return v


def positive(name: str, value, *, optional: bool = False, fix: str | None = None) -> float | None:
    """``value`` as a finite float > 0."""
    return real(name, value, above=0.0, optional=optional, fix=fix)


def choice(name: str, value, choices: Iterable, *, optional: bool = False, fix: str | None = None):
    """``value`` if it is one of ``choices`` (compared with ==), else ValueError listing them."""
    if value is None and optional:
        return None
    options = list(choices)
    try:
        ok = value in options
    except TypeError:  # unhashable against a dict's keys, say
        ok = False
    if ok:
        return value
    close = (difflib.get_close_matches(value, [str(o) for o in options], n=3)
             if isinstance(value, str) else [])
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown {name} {value!r}{hint}; expected one of {options}" + _tail(fix, ""))


def boolean(name: str, value, *, optional: bool = False, fix: str | None = None) -> bool | None:
    """``value`` if it is True or False (numpy's bool too); 0, 1 and 'yes' are refused."""
    if value is None and optional:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ArgumentTypeError(f"{name} must be True or False, got {_got(value)}" + _tail(fix, ""))


def finite_array(name: str, value, *, shape: tuple | None = None,
                 fix: str | None = None) -> np.ndarray:
    """``value`` as a float64 array of all-finite entries (and of ``shape`` where given;
    None in ``shape``: any length)."""
    try:
        x = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ArgumentTypeError(f"{name} must be an array of numbers, got {type(value).__name__}"
                                + _tail(fix, "")) from None
    if shape is not None and (x.ndim != len(shape)
                              or any(n is not None and n != m for n, m in zip(shape, x.shape))):
        dims = ", ".join("n" if n is None else str(n) for n in shape)
        want = "(" + dims + ("," if len(shape) == 1 else "") + ")"
        raise ValueError(f"{name} must have shape {want}, got shape {x.shape}" + _tail(fix, ""))
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must be finite, got {x} (contains NaN or inf)" + _tail(fix, ""))
    return x


def float_dtype(name: str, value, *, fix: str | None = None):
    """``value`` if it is a floating torch.dtype (torch.float32, torch.float64, ...)."""
    is_dtype = type(value).__module__ == "torch" and type(value).__name__ == "dtype"
    if is_dtype and value.is_floating_point:
        return value
    raise ArgumentTypeError(f"{name} must be a floating torch.dtype such as torch.float32, "
                            f"got {value!r}"
                            + _tail(fix, ""))
