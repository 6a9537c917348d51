"""Feature libraries for the linear part of a vector field: a JSON-able spec and its torch module.

A spec is a dict (stored in a model's ``field_config``, so it must stay plain
data)::

    {"poly": d,                    # every monomial of total degree <= d (constant first); 0: none
     "trig": [[w, ...], ...],      # per component i, sin(w z_i) and cos(w z_i) for each w; [] none
     "trig_times": 0 or 1,         # 1: each trig term also times each z_j
     "rational": False}            # True: 1 / (1 + z_i^2) and z_j / (1 + z_i^2)

Features are computed from the field's input z (standardised states) in the
order: monomials (``monomial_exponents``' order), sin terms, cos terms
(component-major, then frequency), trig products (z_j times each trig term,
j-major), rational terms (i-major: 1/(1+z_i^2), then z_j/(1+z_i^2) for each j).
"""
from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from systems import checks

__all__ = ["Library"]


def monomial_exponents(dim: int, degree: int) -> torch.Tensor:
    """Exponents of every monomial of total degree <= ``degree``: int64 (n_terms, dim).

    Term k is the product of ``x_aug[i]`` over the ``degree`` indices of
    ``itertools.combinations_with_replacement(range(dim + 1), degree)``,
    with ``x_aug = (1, x_1, ..., x_dim)``: constant first, then linear, ...
    """
    rows = []
    for combo in itertools.combinations_with_replacement(range(dim + 1), degree):
        e = [0] * dim
        for i in combo:
            if i:
                e[i - 1] += 1
        rows.append(e)
    return torch.tensor(rows, dtype=torch.int64).reshape(len(rows), dim)


def monomial_name(exponents, names) -> str:
    """'1', 'x', 'x^2*y', ... for one row of exponents and the variables' names."""
    parts = [n if e == 1 else f"{n}^{e}" for n, e in zip(names, (int(v) for v in exponents)) if e]
    return "*".join(parts) if parts else "1"


def _freq(w: float) -> str:
    return "" if w == 1 else f"{w:.4g}*"


def check_spec(spec, dim: int) -> dict:
    """The spec, checked and completed with its defaults (see the module docstring)."""
    if not isinstance(spec, dict):
        raise TypeError(f"library must be a dict like {{'poly': 2}}, got {type(spec).__name__}")
    unknown = sorted(set(spec) - {"poly", "trig", "trig_times", "rational"})
    if unknown:
        raise ValueError(f"unknown library key(s) {unknown}; known: poly, trig, trig_times, "
                         "rational")
    out = {"poly": checks.integer("library poly degree", spec.get("poly", 0), minimum=0),
           "trig_times": checks.integer("library trig_times", spec.get("trig_times", 0), minimum=0,
                                        maximum=1),
           "rational": checks.boolean("library rational", spec.get("rational", False))}
    trig = spec.get("trig", [])
    if not isinstance(trig, (list, tuple)) or (trig and len(trig) != dim):
        raise ValueError(f"library trig must be a list of {dim} frequency lists (one per "
                         "component) or "
                         f"[], got {trig!r}")
    freqs = [[float(checks.real(f"library trig[{i}]", w, above=0.0)) for w in row]
             for i, row in enumerate(trig)]
    if freqs and len({len(row) for row in freqs}) != 1:
        raise ValueError("library trig needs the same number of frequencies for every component, "
                         f"got {trig!r}")
    out["trig"] = freqs if freqs and freqs[0] else []
    if out["trig_times"] and not out["trig"]:
        raise ValueError("library trig_times = 1 needs trig frequencies; pass trig or "
                         "trig_times = 0")
    if spec_n_terms(out, dim) == 0:
        raise ValueError(f"library {spec!r} has no terms; pass poly >= 1, trig or rational")
    return out


def spec_n_terms(spec: dict, dim: int) -> int:
    """The number of feature columns of a checked spec."""
    n_poly = math.comb(dim + spec["poly"], spec["poly"]) if spec["poly"] else 0
    n_trig = 2 * sum(len(row) for row in spec["trig"])
    n_rational = (dim + dim * dim) * bool(spec["rational"])
    return n_poly + n_trig * (1 + dim * spec["trig_times"]) + n_rational


def monomial_maps(dim: int, degree: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(select (degree, dim, n_terms), const (degree, n_terms)): factor k of monomial j of degree <=
    ``degree`` in ``dim`` variables is the affine map const[k, j] + z @ select[k, :, j] (z_i or 1),
    so the monomials are a product of ``degree`` matrix products (one BLAS call each, forward and
    backward; a gather and its scatter-add cost about twice as much)."""
    combos = list(itertools.combinations_with_replacement(range(dim + 1), degree))
    select = torch.zeros(degree, dim, len(combos), dtype=dtype)
    const = torch.zeros(degree, len(combos), dtype=dtype)
    for j, combo in enumerate(combos):
        for k, i in enumerate(combo):
            if i == 0:
                const[k, j] = 1.0
            else:
                select[k, i - 1, j] = 1.0
    return select, const


class Library(nn.Module):
    """The features of a library spec: z (B, dim) -> (B, n_terms); no parameters."""

    def __init__(self, dim: int, spec: dict, *, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.dim = checks.integer("dim", dim, minimum=1)
        self.spec = check_spec(spec, self.dim)
        self.n_terms = spec_n_terms(self.spec, self.dim)
        degree = self.spec["poly"]
        self.degree = degree
        if degree:
            select, const = monomial_maps(self.dim, degree, dtype)
            self.register_buffer("_select", select, persistent=False)
            self.register_buffer("_const", const, persistent=False)
        if self.spec["trig"]:
            freqs = torch.tensor(self.spec["trig"], dtype=dtype)
            self.register_buffer("_freqs", freqs, persistent=False)

    def _monomials(self, z: torch.Tensor) -> torch.Tensor:
        sel, const = self._select, self._const
        if sel.dtype != z.dtype:
            sel, const = sel.to(z.dtype), const.to(z.dtype)
        out = torch.addmm(const[0], z, sel[0])
        for k in range(1, self.degree):
            out = out * torch.addmm(const[k], z, sel[k])
        return out

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Features (B, n_terms) of states z (B, dim)."""
        blocks = [self._monomials(z)] if self.degree else []
        if self.spec["trig"]:
            arg = (z[:, :, None] * self._freqs.to(z.dtype)).flatten(1)  # (B, dim * K)
            trig = torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)
            blocks.append(trig)
            if self.spec["trig_times"]:
                blocks.append((z[:, :, None] * trig[:, None, :]).flatten(1))
        if self.spec["rational"]:
            r = 1.0 / (1.0 + z * z)  # (B, dim)
            zr = torch.cat([torch.ones_like(z[:, :1]), z], dim=1)  # (B, 1 + dim)
            blocks.append((r[:, :, None] * zr[:, None, :]).flatten(1))
        return blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)

    def term_names(self, names) -> list[str]:
        """One readable name per feature column, in the field's own (standardised) variables
        named ``names`` (dim,): e.g. 'x*y', 'sin(y)', 'z*cos(2*x)', 'y/(1+x^2)'."""
        names = [str(n) for n in names]
        if len(names) != self.dim:
            raise ValueError(f"term_names needs {self.dim} variable names, got {len(names)}: "
                             f"{names}")
        exps = monomial_exponents(self.dim, self.degree).tolist() if self.degree else []
        out = [monomial_name(e, names) for e in exps]
        trig = []
        for fn in ("sin", "cos"):
            trig += [f"{fn}({_freq(w)}{n})" for n, row in zip(names, self.spec["trig"])
                     for w in row]
        out += trig
        if self.spec["trig_times"]:
            out += [f"{n}*{t}" for n in names for t in trig]
        if self.spec["rational"]:
            for n in names:
                out += [f"1/(1+{n}^2)"] + [f"{m}/(1+{n}^2)" for m in names]
        return out
