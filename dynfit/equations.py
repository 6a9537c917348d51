"""Read a fitted field: its polynomial library part as equations in the data's physical variables.

The default field (:class:`dynfit.PolynomialField`) is ``f(z) = W^T p(z) + mlp(z)``
on standardised states ``z = (x - mean) / std`` in model time (one unit = one
sampling step ``dt``). The physical field is ``dx/dt = std / dt * f(z)``; with
``z_i = (x_i - m_i) / s_i`` each monomial of z expands into monomials of x, so
the library part is a polynomial in the physical variables:
:func:`physical_polynomial` gives its coefficients, :func:`equations` prints
them (one line per component, in the data's component names) together with
the size of the MLP correction relative to the library part.

A library field with non-polynomial terms (a ``term_names(names)`` method
but no monomial exponents) is printed in the standardised variables ``z``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from systems import checks

__all__ = ["physical_polynomial"]


def _exponents(field) -> np.ndarray | None:
    """Monomial exponents (n_terms, dim) of a polynomial library field, or None."""
    if hasattr(field, "exponents"):
        e = field.exponents() if callable(field.exponents) else field.exponents
        return (
            None if e is None else np.asarray(e.cpu() if hasattr(e, "cpu") else e, dtype=np.int64)
        )
    from .nn.fields import PolynomialField, monomial_exponents

    if isinstance(field, PolynomialField):
        return monomial_exponents(field.dim, field.degree).numpy()
    spec = getattr(
        getattr(field, "library", None), "spec", None
    )  # LibraryField: a polynomial-only library
    if (
        isinstance(spec, dict)
        and spec.get("poly")
        and not spec.get("trig")
        and not spec.get("rational")
    ):
        return monomial_exponents(field.dim, int(spec["poly"])).numpy()
    return None


def _library(surrogate):
    """(field, coef (n_terms, D) float64) of the surrogate's library part; a clear error
    otherwise."""
    field = surrogate.field
    coef = getattr(field, "coef", None)
    if not isinstance(coef, torch.Tensor) or coef.ndim != 2:
        raise ValueError(
            f"this surrogate's field ({type(field).__name__}) has no term library, so it has "
            "no equations to read; train with the default field (kind 'poly', a polynomial "
            "library plus an MLP) to read them"
        )
    return field, coef.detach().cpu().to(torch.float64).numpy()


def physical_polynomial(surrogate) -> tuple[np.ndarray, np.ndarray]:
    """The library part of dx/dt in physical variables: (exponents (K, D), coefficients (K, D)).

    Row k is the monomial prod_i x_i^exponents[k, i]; column j of the
    coefficients its weight in dx_j/dt (physical time units). Monomials
    sorted by total degree, then by exponents.
    """
    field, coef = _library(surrogate)
    expo = _exponents(field)
    if expo is None:
        raise ValueError(
            f"the field {type(field).__name__} holds non-polynomial terms; its equations are "
            "printed in standardised variables by surrogate.equations()"
        )
    dim = expo.shape[1]
    mean = np.asarray(surrogate.scaler.mean, dtype=np.float64)
    std = np.asarray(surrogate.scaler.std, dtype=np.float64)
    dt = float(surrogate.dt)
    poly: dict[tuple, np.ndarray] = {}
    for e, w in zip(expo, coef):
        # prod_i ((x_i - m_i) / s_i)^e_i = prod_i s_i^-e_i sum_a C(e_i, a) x_i^a (-m_i)^(e_i - a)
        choices = [range(int(ei) + 1) for ei in e]
        for a in itertools.product(*choices):
            c = 1.0
            for i, (ei, ai) in enumerate(zip(e, a)):
                c *= math.comb(int(ei), ai) * (-mean[i]) ** (int(ei) - ai) / std[i] ** int(ei)
            key = tuple(int(v) for v in a)
            poly[key] = poly.get(key, np.zeros(dim)) + c * w
    keys = sorted(poly, key=lambda k: (sum(k), tuple(-v for v in k)))
    out_e = np.array(keys, dtype=np.int64).reshape(-1, dim)
    out_c = np.array([poly[k] for k in keys]).reshape(-1, dim) * (std / dt)[None, :]
    return out_e, out_c


def _monomial(e, names) -> str:
    parts = []
    for n, p in zip(names, e):
        if p == 1:
            parts.append(n)
        elif p > 1:
            parts.append(f"{n}^{p}")
    return " ".join(parts) if parts else "1"


def correction_size(surrogate, states=None) -> tuple[float, str]:
    """RMS of the MLP correction over RMS of the library part of the (standardised) field.

    states: physical states (..., D) to measure on (e.g. the training data);
    None: 2000 draws of a standard normal in the standardised variables (the
    model does not store its training states; the description says so).
    Returns (ratio, description of where it was measured).
    """
    field, coef = _library(surrogate)
    if getattr(field, "mlp", None) is None:
        return 0.0, "the field has no MLP correction"
    if states is not None:
        from .data import as_trajectories

        if not isinstance(states, np.ndarray) or states.ndim != 2:
            states = as_trajectories(states, require_dt=False)[0]
        x = np.asarray(states, dtype=np.float64).reshape(-1, np.shape(states)[-1])
        if x.shape[1] != surrogate.dim or not np.isfinite(x).all():
            raise ValueError(
                f"states must be finite physical states with {surrogate.dim} components, got "
                f"shape {np.shape(states)}"
            )
        z = surrogate.scaler.forward(x)
        where = f"over {z.shape[0]} given states"
    else:
        z = np.random.default_rng(0).standard_normal((2000, surrogate.dim))
        where = (
            "over 2000 standard-normal draws of the standardised state (the training states are "
            "not stored with the model: pass states=<training data> to measure on them)"
        )
    p = next(field.parameters())
    zt = torch.as_tensor(z, dtype=p.dtype, device=p.device)
    with torch.no_grad():
        lib = (field.features(zt) @ field.coef).to(torch.float64)
        mlp = field.mlp(torch.zeros((), dtype=p.dtype, device=p.device), zt).to(torch.float64)
    den = float(lib.pow(2).mean().sqrt())
    num = float(mlp.pow(2).mean().sqrt())
    return (num / den if den > 0 else math.inf), where


def equations(surrogate, *, threshold: float = 1e-3, precision: int = 4, states=None) -> str:
    """The library part of the field as text, one line ``(name)' = c1 term1 + ...`` per component.

    threshold: physical coefficients below it in magnitude are left out.
    precision: significant digits. states: where to measure the MLP's share
    (see :func:`correction_size`).
    """
    threshold = checks.real(
        "threshold",
        threshold,
        minimum=0.0,
        fix="terms whose coefficient is below threshold in magnitude are left out",
    )
    precision = checks.integer("precision", precision, minimum=1, fix="significant digits, e.g. 4")
    names = surrogate.components
    field, coef = _library(surrogate)
    expo = _exponents(field)
    if expo is not None:
        expo, coef = physical_polynomial(surrogate)
        terms = [_monomial(e, names) for e in expo]
        head = "dx/dt in physical variables and time units"
    else:
        if not hasattr(field, "term_names"):
            raise ValueError(
                f"the field {type(field).__name__} names no terms (no term_names method)"
            )
        znames = [f"z_{n}" for n in names]
        terms = list(field.term_names(znames))
        coef = coef * (np.asarray(surrogate.scaler.std) / surrogate.dt)[None, :]
        mean, std = surrogate.scaler.mean, surrogate.scaler.std
        head = "dx/dt in physical time units, terms in standardised variables " + ", ".join(
            f"z_{n} = (x - {m:.{precision}g}) / {s:.{precision}g}"
            for n, m, s in zip(names, mean, std)
        )
    lines = [f"# {head}"]
    for j, name in enumerate(names):
        parts = []
        for term, c in zip(terms, coef[:, j]):
            if abs(c) < threshold or c == 0:
                continue
            sign = "-" if c < 0 else "+"
            num = f"{abs(c):.{precision}g}"
            text = num if term == "1" else (term if num == "1" else f"{num} {term}")
            parts.append((sign, text))
        if not parts:
            rhs = "0"
        else:
            rhs = ("-" if parts[0][0] == "-" else "") + parts[0][1]
            rhs += "".join(f" {s} {t}" for s, t in parts[1:])
        lines.append(f"({name})' = {rhs}")
    ratio, where = correction_size(surrogate, states)
    lines.append(f"# MLP correction / library part (RMS, standardised field): {ratio:.3g} {where}")
    return "\n".join(lines)
