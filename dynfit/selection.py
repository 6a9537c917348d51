"""The library chosen by the data: candidates fitted by sparse regression, judged on validation.

``fit``'s default field kind "auto" calls :func:`auto_field_config`: it turns
{"kind": "auto", ...} into a concrete {"kind": "library", "library": spec,
...} config plus the sparsity mask of :class:`dynfit.nn.fields.LibraryField`,
and a report of every candidate.

How a library is chosen (all in the model's units: standardised states, one
time unit per sampling interval):

1. Targets of the training and validation parts
   (:func:`dynfit.prefit.choose_targets`: differences on clean data; on noisy
   data weak-form systems G xi = y, :mod:`dynfit.weakform`, or smoothed
   derivatives when asked). Validation: the last fifth of the trajectories
   (of the time axis for one trajectory); on weak-form targets the errors
   below are weak-form residuals ||G xi - y|| / ||y||.
2. Candidates (:func:`candidates`): polynomials of degree 1..``max_degree``
   (degrees stop growing when two in a row do not improve the best error by
   10%, or past ``max_terms`` terms or an eighth of the training rows),
   trigonometric terms sin/cos(k w z_i) at
   k = 1, 2, 3 in two frequency bases (standardised w = 1, and physical w =
   the component's standard deviation, i.e. sin(k x) of the physical state)
   plus degree 1 or 2 polynomials, their products with degree-1 monomials,
   and rational terms z_j / (1 + z_i^2) with degree 2 polynomials.
3. Each is fitted by sequentially thresholded least squares (STLSQ, as SINDy)
   on the training part at thresholds ``THRESHOLDS`` (0, 1e-3, 5e-2 with 3
   rounds for libraries over 200 terms) (of each component's
   RMS derivative, on column-scaled coefficients); the sparsest fit within
   10% of the smallest validation error, or closer to the targets than the
   floor below, wins.
4. The contenders: candidates within 25% of the best validation derivative
   error, or closer to the targets than the floor: the targets' own error
   (:func:`_target_floor`; a larger library then only fits the targets'
   error, e.g. the truncation error of the differences, which is a smooth
   function of the state), and never below ``ERROR_FLOOR`` (1e-9, the
   accuracy of samples integrated at rtol 1e-9).
5. A short free run (RK4, 2 steps per sample) of each contender's library
   alone from 8 validation states over ``free_steps`` samples: one that
   leaves 10x the data's range or turns non-finite is rejected, and so is
   one whose free-run error is over 10x the best contender's.
6. The choice: the contender with the fewest library terms (then active
   terms, then validation error).
"""
from __future__ import annotations

import json
import math

import numpy as np
import torch

from systems import checks

from ._threads import one_thread
from .nn.library import Library, check_spec, spec_n_terms

__all__ = ["auto_field_config", "select_library"]

THRESHOLDS = (0.0, 1e-4, 1e-3, 1e-2, 5e-2)
_NEAR_BEST = 1.25  # derivative error within this factor of the best: eligible
# relative derivative errors below this are not told apart: the accuracy of the samples themselves
# (systems.simulate integrates at rtol 1e-9): a larger library there fits the integrator's error
ERROR_FLOOR = 1e-9
_FREE_FACTOR = 10.0  # free-run error within this factor of the best: eligible
_MAX_ROWS = 8000  # training rows used by the regression (evenly thinned)
_BIG = 200  # libraries with more terms: thresholds 0, 1e-3, 5e-2 and 3 STLSQ rounds


def candidates(dim: int, scale=None, *, max_degree: int = 5,
               max_terms: int = 1000) -> list[tuple[str, dict]]:
    """(name, spec) of the non-polynomial candidates (:func:`select_library` grows the
    polynomials).

    scale (dim,): the standardisation's std (physical frequency basis); None or ones: one basis.
    """
    bases = [("std", [1.0] * dim)]
    if scale is not None:
        s = [float(v) for v in np.asarray(scale, dtype=np.float64).reshape(-1)]
        if not np.allclose(s, 1.0):
            bases.append(("phys", s))
    out = []
    for tag, w in bases:
        trig = [[k * wi for k in (1, 2, 3)] for wi in w]
        for name, spec in ((f"poly1+trig_{tag}", {"poly": 1, "trig": trig}),
                           (f"poly2+trig_{tag}", {"poly": 2, "trig": trig}),
                           (f"poly1+trig_{tag}*z", {"poly": 1, "trig": trig, "trig_times": 1})):
            if spec_n_terms(check_spec(spec, dim), dim) <= max_terms:
                out.append((name, spec))
    if spec_n_terms(check_spec({"poly": 2, "rational": True}, dim), dim) <= max_terms:
        out.append(("poly2+rational", {"poly": 2, "rational": True}))
    return out


def stlsq(feats: np.ndarray, target: np.ndarray, threshold: float, *, iterations: int = 8,
          full: np.ndarray | None = None) -> np.ndarray:
    """Sequentially thresholded least squares: coefficients (n_terms, D) of target (B, D) on feats
    (B, n_terms), a term dropped for component j while its column-scaled coefficient is below
    ``threshold`` x RMS(target[:, j]). full: the dense solution on the column-scaled features,
    when already known (one solve serves every threshold)."""
    scale = np.sqrt(np.mean(feats ** 2, axis=0)).clip(1e-300)
    a = feats / scale
    coef = np.linalg.lstsq(a, target, rcond=None)[0] if full is None else full.copy()
    if threshold <= 0:
        return coef / scale[:, None]
    cut = threshold * np.sqrt(np.mean(target ** 2, axis=0))
    active = np.abs(coef) >= cut
    for _ in range(iterations):
        new = np.zeros_like(coef)
        for j in range(target.shape[1]):
            cols = np.flatnonzero(active[:, j])
            if cols.size:
                new[cols, j] = np.linalg.lstsq(a[:, cols], target[:, j], rcond=None)[0]
        now = np.abs(new) >= cut
        coef = new
        if (now == active).all():
            break
        active &= now
    coef[~active] = 0.0
    return coef / scale[:, None]


def _free_run(library: Library, coef: np.ndarray, z_val: np.ndarray,
              steps: int) -> tuple[float, bool]:
    """(RMS error of a free run of the library model against z_val over ``steps`` samples from 8
    starts, left 10x the data's range or turned non-finite); RK4 with 2 steps per sample."""
    n, t, d = z_val.shape
    steps = max(min(steps, t - 1), 1)
    starts = [(i % n, int(s)) for i, s in enumerate(np.linspace(0, t - 1 - steps, 8).astype(int))]
    x = torch.as_tensor(np.array([z_val[i, s] for i, s in starts]), dtype=torch.float64)
    truth = np.stack([z_val[i, s:s + steps + 1] for i, s in starts], axis=1)  # (steps + 1, 8, D)
    c = torch.as_tensor(np.ascontiguousarray(coef), dtype=torch.float64)
    bound = 10.0 * max(float(np.abs(z_val).max()), 1.0)
    out = [x.numpy().copy()]
    h = 0.5

    def f(y):
        return library(y) @ c

    with torch.no_grad():
        for _ in range(steps):
            for _ in range(2):
                k1 = f(x)
                k2 = f(x + 0.5 * h * k1)
                k3 = f(x + 0.5 * h * k2)
                k4 = f(x + h * k3)
                x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            if not bool(torch.isfinite(x).all()) or float(x.abs().max()) > bound:
                return math.inf, True
            out.append(x.numpy().copy())
    return float(np.sqrt(np.mean((np.array(out) - truth) ** 2))), False


def _features(lib: Library, data: dict) -> tuple[np.ndarray, np.ndarray]:
    """(training, validation) regression matrices of ``lib``: its features at the target states,
    or with weak-form targets the weak-form matrices G."""
    if "form_t" in data:
        from .weakform import weak_system

        return (weak_system(data["zt"], lib, form=data["form_t"])[0],
                weak_system(data["zv"], lib, form=data["form_v"])[0])
    with torch.no_grad():
        return (lib(torch.as_tensor(data["xt"])).numpy(),
                lib(torch.as_tensor(data["xv"])).numpy())


def _evaluate(name: str, spec: dict, data: dict) -> dict:
    """One candidate: STLSQ at each threshold on the training part, scored on the validation part;
    the sparsest fit within 10% of the best validation error (or below the floor) is kept."""
    dim = data["dim"]
    lib = Library(dim, spec, dtype=torch.float64)
    ft, fv = _features(lib, data)
    yv = data["yv"]
    norm = float(np.sqrt(np.sum(yv ** 2)))
    fits = []
    try:
        scale = np.sqrt(np.mean(ft ** 2, axis=0)).clip(1e-300)
        full = np.linalg.lstsq(ft / scale, data["yt"], rcond=None)[0]
    except np.linalg.LinAlgError:
        full = None
    big = lib.n_terms > _BIG  # fewer thresholds and STLSQ rounds for large libraries
    for tau in (THRESHOLDS[::2] if big else THRESHOLDS) if full is not None else ():
        try:
            coef = stlsq(ft, data["yt"], tau, full=full, iterations=3 if big else 8)
        except np.linalg.LinAlgError:
            continue
        err = float(np.sqrt(np.sum((fv @ coef - yv) ** 2)) / norm)
        fits.append((err if math.isfinite(err) else math.inf, tau, coef))
    row = {"name": name, "library": lib.spec, "n_terms": lib.n_terms, "free_run_error": None,
           "blew_up": None}
    if not fits or not math.isfinite(min(f[0] for f in fits)):
        return {**row, "val_error": math.inf, "active": 0, "threshold": 0.0, "coef": None,
                "lib": lib}
    best = min(f[0] for f in fits)
    # the sparsest fit near the best, or closer to the targets than their own error
    limit = max(1.1 * best, data.get("floor", 0.0), ERROR_FLOOR)
    err, tau, coef = max((f for f in fits if f[0] <= limit), key=lambda f: f[1])
    return {**row, "val_error": err, "active": int(np.count_nonzero(coef)), "threshold": tau,
            "coef": coef,
            "lib": lib}


def _target_floor(z_val: np.ndarray, kind: str, noise, windows, order: int,
                  data: dict | None = None) -> float:
    """The relative error of the validation derivative targets themselves (candidates closer than
    it to the targets are not told apart): on differences, the gap between orders ``order`` and
    ``order - 2`` (an upper bound of the error of ``order``); on smoothed targets, the noise the
    Savitzky-Golay derivative keeps, sqrt(sum_j s_j^2 |k_j|^2 / sum_j mean(y_j^2)); on weak-form
    targets the same with the test function's derivative |phi'|^2 for |k_j|^2."""
    from .prefit import derivative_estimates
    from .smoothing import _kernels, derivative_windows

    if kind == "weak":
        y, gain = data["yv"], data["form_v"].noise_gain()
        return float(np.sqrt(np.sum(np.asarray(noise) ** 2) * gain ** 2
                             / np.sum(np.mean(y ** 2, axis=0))))
    if kind == "differences":
        _, hi = derivative_estimates(z_val, order)
        _, lo = derivative_estimates(z_val[:, 1:-1], order - 2)
        return float(np.linalg.norm(hi - lo) / np.linalg.norm(hi))
    from .smoothing import savgol_derivatives

    _, y = savgol_derivatives(z_val, windows)
    kept = [float(np.sum(_kernels(int(w), 4)[1] ** 2)) for w in derivative_windows(windows)]
    return float(np.sqrt(np.sum(np.asarray(noise) ** 2 * kept) / np.sum(np.mean(y ** 2, axis=0))))


def select_library(z, *, scale=None, max_degree: int = 5, max_terms: int = 1000,
                   free_steps: int = 100,
                   targets: str = "auto", order: int = 8) -> tuple[dict, np.ndarray, dict]:
    """Choose a library for trajectories z (N, T, D) (standardised, unit spacing).

    Returns (spec, mask (n_terms, D) float 0/1, report): report holds
    "candidates" (name, library, n_terms, active terms, threshold,
    val_error, free_run_error, blew_up for each), "chosen", "reason",
    "targets", "noise_level" (D,) and "windows" (smoothed targets).
    """
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 3:
        raise ValueError(f"z must have shape (N, T, D), got {z.shape}")
    max_degree = checks.integer("max_degree", max_degree, minimum=1)
    with one_thread():
        return _select(z, scale, max_degree, max_terms, free_steps, targets, order)


def _weak_data(zt: np.ndarray, zv: np.ndarray, windows) -> tuple[dict, int]:
    """The weak-form systems' data for the training and validation parts (test functions of the
    pre-fit's width, at most half the validation part) and the width."""
    from .weakform import WeakForm, width_from_windows

    t_all = zt.shape[1] + (zv.shape[1] if zt.shape[0] == 1 else 0)  # one trajectory: split in time
    width = width_from_windows(windows, t_all)
    width = min(width, zv.shape[1] // 2, zt.shape[1] // 2)
    form_t, form_v = WeakForm(zt.shape[1], width), WeakForm(zv.shape[1], width)
    return {"zt": zt, "zv": zv, "form_t": form_t, "form_v": form_v, "yt": form_t.targets(zt),
            "yv": form_v.targets(zv)}, width


def _select(z, scale, max_degree, max_terms, free_steps, targets, order):
    from .prefit import choose_targets, derivative_targets, validation_split
    from .smoothing import savgol_window

    dim = z.shape[2]
    tinfo = choose_targets(z, targets)
    if tinfo["targets"] in ("smoothed", "weak"):
        tinfo["windows"] = [int(w) for w in savgol_window(z, np.asarray(tinfo["noise_level"]))]
    zt, zv = validation_split(z)
    if tinfo["targets"] == "weak":
        data, tinfo["weak_width"] = _weak_data(zt, zv, tinfo["windows"])
        rows_t = min(zt.shape[0] * zt.shape[1], 4 * data["yt"].shape[0])
    else:
        kw = {"order": order, "targets": tinfo["targets"], "windows": tinfo.get("windows")}
        xt, yt, _ = derivative_targets(zt, **kw)
        xv, yv, _ = derivative_targets(zv, **kw)
        if xt.shape[0] > _MAX_ROWS:
            keep = np.linspace(0, xt.shape[0] - 1, _MAX_ROWS).astype(int)
            xt, yt = xt[keep], yt[keep]
        data, rows_t = {"xt": xt, "yt": yt, "xv": xv, "yv": yv}, xt.shape[0]
    data.update({"dim": dim, "zv": zv})
    floor = _target_floor(zv, tinfo["targets"], tinfo["noise_level"], tinfo.get("windows"), order,
                          data) if tinfo["targets"] != "differences" or order > 2 else 0.0
    data["floor"] = floor
    max_terms = min(max_terms, max(rows_t // 8, 1))
    rows, best_poly, stale, best_err = [], 1, 0, math.inf
    for degree in range(1, max_degree + 1):
        spec = {"poly": degree}
        if spec_n_terms(check_spec(spec, dim), dim) > max_terms:
            break
        row = _evaluate(f"poly{degree}", spec, data)
        rows.append(row)
        if row["val_error"] < 0.9 * best_err:
            best_err, best_poly, stale = row["val_error"], degree, 0
        else:
            stale += 1
            if stale == 2:
                break
    extra = candidates(dim, scale, max_degree=max_degree, max_terms=max_terms)
    if best_poly >= 3:
        extra += [(f"poly{best_poly}+{name.split('+', 1)[1]}", {**spec, "poly": best_poly})
                  for name, spec in extra
                  if name.startswith("poly1+trig") and "trig_times" not in spec]
        extra = [(n, s) for n, s in extra if spec_n_terms(check_spec(s, dim), dim) <= max_terms]
    rows += [_evaluate(name, spec, data) for name, spec in extra]
    chosen, reason = _choose(rows, floor, zv, free_steps)
    if chosen is None:
        spec = check_spec({"poly": 2}, dim)
        mask = np.ones((spec_n_terms(spec, dim), dim))
        reason = ("every candidate's free run blew up; fell back to the full degree-2 polynomial "
                  "library")
        name = "poly2 (fallback)"
    else:
        spec, name = chosen["library"], chosen["name"]
        mask = (chosen["coef"] != 0).astype(np.float64)
    report = {"chosen": name, "reason": reason, "targets": tinfo["targets"],
              "noise_level": tinfo["noise_level"], "validation": "last fifth of the trajectories"
              if z.shape[0] >= 2 else "last fifth of the trajectory",
              "target_error": floor,
              "candidates": [{k: v for k, v in r.items() if k not in ("coef", "lib")}
                             for r in rows]}
    for key in ("windows", "weak_width"):
        if key in tinfo:
            report[key] = tinfo[key]
    return spec, mask, report


def _choose(rows: list[dict], floor: float, zv: np.ndarray,
            free_steps: int) -> tuple[dict | None, str]:
    """The candidate with the fewest library terms (then active terms) among those whose validation
    error is within _NEAR_BEST of the best or below the targets' own error ``floor``, and whose
    free run stays in range (free runs only for those; if all of them blow up, for the rest)."""
    ok = [r for r in rows if math.isfinite(r["val_error"])]
    if not ok:
        return None, ""
    best = min(r["val_error"] for r in ok)
    limit = max(_NEAR_BEST * best, floor, ERROR_FLOOR)
    near = [r for r in ok if r["val_error"] <= limit]
    for group in (near, [r for r in ok if r["val_error"] > limit]):
        for r in group:
            r["free_run_error"], r["blew_up"] = _free_run(r["lib"], r["coef"], zv, free_steps)
        good = [r for r in group if not r["blew_up"]]
        if good:
            free = min(r["free_run_error"] for r in good)
            good = [r for r in good if r["free_run_error"] <= _FREE_FACTOR * free + 1e-12]
            pick = min(good, key=lambda r: (r["n_terms"], r["active"], r["val_error"]))
            return pick, (
                f"fewest terms ({pick['n_terms']}, {pick['active']} active) among the {len(good)} "
                f"candidate(s) within {_NEAR_BEST:g}x the best validation derivative error "
                f"({best:.3g}) or the targets' own error ({max(floor, ERROR_FLOOR):.3g}) whose "
                f"free runs over {free_steps} samples stayed in range and within "
                f"{_FREE_FACTOR:g}x the best ({free:.3g})"
                + ("" if group is near else "; every closer candidate blew up"))
    return None, ""


def auto_field_config(config: dict, z, *, scale=None, targets: str = "auto", order: int = 8
                      ) -> tuple[dict, np.ndarray, dict]:
    """A {"kind": "auto", ...} field config made concrete on standardised trajectories z (N, T, D).

    config: "degree" (None: up to 5) bounds the polynomial degrees tried;
    width, depth, activation, correction go to the neural correction. Returns
    (LibraryField config, mask (n_terms, D), report with "library_selection":
    the report as a JSON string).
    """
    options = {k: v for k, v in config.items() if k not in ("kind", "degree")}
    if options.pop("time_dependent", False):
        raise ValueError("field kind 'auto' is time-invariant (time_dependent=False); for a "
                         "time-dependent field use kind 'mlp' or 'residual' with "
                         "time_dependent=True")
    degree = config.get("degree")
    spec, mask, report = select_library(z, scale=scale, max_degree=5 if degree is None else degree,
                                        targets=targets, order=order)
    out = {"kind": "library", "library": spec, **options}
    return out, mask, report


def report_json(report: dict) -> str:
    """The report as a compact JSON string (inf/nan written as strings)."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return str(v)
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    return json.dumps(clean(report), separators=(",", ":"))
