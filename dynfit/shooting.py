"""Multiple shooting: fit a field to noisy trajectories without differentiating them.

Each trajectory (standardised, model time: one unit per sample) is cut into
consecutive segments of ``length`` samples. Every segment's initial state is a
parameter, started from the Savitzky-Golay smoothed data, and is integrated by
the adaptive solver over its segment. The loss is the mean squared misfit of
every segment's samples (its first included) plus ``continuity`` x the mean
squared gap between a segment's end and the next segment's start. The noise is
averaged by the integration instead of amplified by differences; the states are
estimated with the field (Bock & Plitt 1984; docs/training.md "Multiple
shooting").

The data decide whether the shot field is kept: it is fitted on four fifths of
the segments; then, for the shot field and for the field shooting started from,
the held-out fifth's states are fitted with the field frozen and free runs of 8
segments from them are scored against the data. The shot field is kept only if
its held-out forecast error is the lower, and then refined on all segments.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from _dyncore import checks

from .prefit import _held_out
from .solvers import MixedNorm, odesolve

__all__ = ["held_out_segments", "segments", "shoot"]

_CHUNK = 20  # iterations per L-BFGS call; progress is judged between calls
_HELD_ITERATIONS = 60  # state-only iterations that estimate the held-out segments' states
_FORECAST_SEGMENTS = 8  # a held-out forecast runs this many segments from an estimated state


def segments(z: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """(first, targets) of the consecutive segments of z (N, T, D): first (K,) the sample index
    each starts at (every ``length`` samples, K = (T - 1) // length) and targets (length + 1,
    N * K, D), trajectory-major."""
    n, t, d = z.shape
    k = (t - 1) // length
    if k < 1:
        raise ValueError(
            f"multiple shooting needs trajectories longer than one segment: {t} samples for "
            f"shooting_length={length}; pass a shorter shooting_length or shooting=False"
        )
    first = np.arange(k) * length
    idx = first[:, None] + np.arange(length + 1)[None, :]  # (K, L + 1)
    targets = z[:, idx]  # (N, K, L + 1, D)
    return first, targets.reshape(n * k, length + 1, d).transpose(1, 0, 2)


def held_out_segments(n: int, k: int) -> np.ndarray:
    """(N * K,) bool, trajectory-major: the validation segments, the pre-fit's split
    (:func:`dynfit.prefit` holds out the last fifth of the trajectories, or of the one
    trajectory's rows); none when there is a single segment."""
    if n * k < 2:
        return np.zeros(n * k, dtype=bool)
    return _held_out(n * k, n).numpy()


class _Problem:
    """The segments' targets, their states (one tensor per part) and the loss of a part."""

    def __init__(self, field, z, states, length, rtol, continuity, max_steps, device, dtype):
        n, _, d = z.shape
        first, targets = segments(z, length)
        self.field, self.n, self.k, self.d = field, n, first.shape[0], d
        self.rtol, self.continuity, self.max_steps = rtol, continuity, max_steps
        s0 = np.asarray(states)[:, first].reshape(n * self.k, d)
        self.s = torch.as_tensor(s0, dtype=dtype, device=device).clone().requires_grad_(True)
        self.z, self.first, self.length = z, first, length
        self.tg = torch.as_tensor(np.ascontiguousarray(targets), dtype=dtype, device=device)
        self.times = torch.arange(length + 1, dtype=dtype, device=device)
        # a gap is counted between segments k and k + 1 of one trajectory, both in the part
        nxt = np.zeros((n, self.k), dtype=bool)
        nxt[:, :-1] = True
        self.has_next = torch.as_tensor(nxt.reshape(-1), device=device)

    def parts(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean squared misfit, mean squared gap) over the segments ``rows`` (bool (N * K,));
        an infinite misfit where a line-search trial made a start state non-finite."""
        if not bool(torch.isfinite(self.s[rows]).all()):
            inf = self.s[rows].nan_to_num(0.0, 0.0, 0.0).sum() * 0.0 + math.inf
            return inf, torch.zeros_like(inf)
        sol = odesolve(self.field, self.s[rows], self.times, method="rkf45",
                       control=MixedNorm(rtol=self.rtol, atol=self.rtol),
                       max_steps=self.max_steps, raise_on_failure=False)
        misfit = (sol.ys - self.tg[:, rows]).square().mean()
        ends = torch.zeros_like(self.s).index_put((rows,), sol.ys[-1])
        linked = rows & self.has_next & torch.roll(rows, -1)
        if not bool(linked.any()):
            return misfit, torch.zeros_like(misfit)
        gap = (ends[linked] - self.s[torch.roll(linked, 1)]).square().mean()
        return misfit, gap

    def forecast_error(self, rows: torch.Tensor) -> float:
        """Mean squared error of free runs of _FORECAST_SEGMENTS segments (fewer where the data
        end: then as long as the earliest of ``rows`` allows, from the segments that fit) from
        the states of the segments ``rows``, against the data: chaos amplifies a field's error
        above the noise, which a segment's misfit cannot show."""
        t = self.z.shape[1]
        start = np.tile(self.first, self.n)
        mine = rows.cpu().numpy()
        if not mine.any():
            return math.nan
        if not bool(torch.isfinite(self.s[rows]).all()):
            return math.inf
        # shorter where the data end: one trajectory's held-out tail is one run to its end
        horizon = min(_FORECAST_SEGMENTS * self.length, t - 1 - int(start[mine].min()))
        ok = mine & (start + horizon <= t - 1)
        traj = np.repeat(np.arange(self.n), self.k)[ok]
        idx = start[ok][:, None] + np.arange(horizon + 1)[None, :]
        truth = torch.as_tensor(self.z[traj[:, None], idx].transpose(1, 0, 2), dtype=self.s.dtype,
                                device=self.s.device)
        times = torch.arange(horizon + 1, dtype=self.s.dtype, device=self.s.device)
        with torch.no_grad():
            sol = odesolve(self.field, self.s[torch.as_tensor(ok, device=self.s.device)], times,
                           method="rkf45", control=MixedNorm(rtol=self.rtol, atol=self.rtol),
                           max_steps=self.max_steps * -(-horizon // self.length),
                           raise_on_failure=False)
            err = float((sol.ys - truth).square().mean())
        return err if math.isfinite(err) else math.inf

    def loss(self, rows: torch.Tensor) -> torch.Tensor:
        misfit, gap = self.parts(rows)
        return misfit + self.continuity * gap


def _minimise(problem: _Problem, weights: list, rows: torch.Tensor, iterations: int,
              tolerance: float, deadline: float) -> tuple[float, int]:
    """L-BFGS (strong Wolfe) on ``problem.loss(rows)`` over ``weights`` and the states, in calls
    of _CHUNK iterations, until the loss changes by less than ``tolerance`` (relative) over 5
    calls, ``iterations`` are spent or ``deadline`` passes; keeps the lowest loss's weights and
    states (a non-finite loss ends it). Returns (lowest loss, iterations done)."""
    params = weights + [problem.s]
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=_CHUNK, tolerance_grad=0.0,
                            tolerance_change=0.0, history_size=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = problem.loss(rows)
        loss.backward()
        return loss

    def snapshot():
        return [p.detach().clone() for p in params]

    with torch.no_grad():
        best_loss = float(problem.loss(rows))
    best, losses, done = snapshot(), [best_loss], 0
    while done < iterations and time.perf_counter() < deadline:
        try:
            opt.step(closure)
        except IndexError:  # torch's strong-Wolfe search after a non-finite trial loss
            break
        done += _CHUNK
        with torch.no_grad():
            loss = float(problem.loss(rows))
        if not math.isfinite(loss):
            break
        if loss < best_loss:
            best_loss, best = loss, snapshot()
        losses.append(loss)
        if len(losses) > 5 and (losses[-6] - losses[-1]) <= tolerance * losses[-6]:
            break
    with torch.no_grad():
        for p, v in zip(params, best):
            p.copy_(v)
    return best_loss, done


def shoot(field: torch.nn.Module, z: np.ndarray, states: np.ndarray, *, length: int = 25,
          iterations: int = 300, rtol: float = 1e-8, continuity: float = 1.0,
          parameters: str = "all", validate: bool = True, tolerance: float = 1e-4,
          max_steps: int | None = None, deadline: float = math.inf, device=None,
          dtype=torch.float64) -> dict:
    """Fit ``field`` (in place; model time, standardised states) to z (N, T, D) by shooting.

    states: (N, T, D) smoothed z; their samples at the segment starts start the states.
    parameters: "all" (every trainable weight) or "library" (the library coefficients ``coef``
    only). Each fit is L-BFGS in calls of 20 iterations until the relative change of the loss
    over 5 calls is below ``tolerance``, ``iterations`` are spent (the refinement: half of them)
    or ``time.perf_counter()`` passes ``deadline``. max_steps: the solver's step limit per
    integration (None: 40 per sample of a segment); a line-search trial whose field runs away
    hits it and gives a non-finite loss instead of a long integration.

    validate: fit on the segments outside :func:`held_out_segments`; keep the field only if
    its held-out forecast error (states refitted with the field frozen, free runs of 8
    segments) is below the starting field's, then refine on all segments. False: fit on all
    segments at once.

    Returns {"shooting_kept" (1/0), "shooting_misfit" (RMS per component, standardised units),
    "shooting_gap" (RMS continuity gap), "shooting_misfit_start", "shooting_held_out" and
    "shooting_held_out_start" (held-out forecast errors, mean square; validate),
    "shooting_segments", "shooting_iterations", "shooting_wall_time", "shooting_parameters"}.
    """
    length = checks.integer("shooting_length", length, minimum=2,
                            fix="give a segment length of at least 2 samples")
    iterations = checks.integer("shooting_iterations", iterations, minimum=0,
                                fix="give a whole number of L-BFGS iterations, e.g. 300")
    checks.choice("parameters", parameters, ("all", "library"))
    z = np.asarray(z, dtype=np.float64)
    if np.shape(states) != z.shape:
        raise ValueError(f"states must have the data's shape {z.shape}, got {np.shape(states)}")
    t0 = time.perf_counter()
    dev = torch.device("cpu") if device is None else torch.device(device)
    if max_steps is None:
        max_steps = 40 * length
    p = _Problem(field, z, states, length, rtol, continuity, max_steps, dev, dtype)
    weights = [field.coef] if parameters == "library" else [
        w for w in field.parameters() if w.requires_grad]
    every = torch.ones(p.n * p.k, dtype=torch.bool, device=dev)
    start = {k: v.detach().clone() for k, v in field.state_dict().items()}
    s_start = p.s.detach().clone()
    with torch.no_grad():
        m0, _ = p.parts(every)
    info = {"shooting_misfit_start": math.sqrt(float(m0)), "shooting_segments": p.n * p.k,
            "shooting_parameters": parameters, "shooting_kept": 1}
    held = torch.as_tensor(held_out_segments(p.n, p.k), device=dev)
    done = 0
    if validate and bool(held.any()):
        _, done = _minimise(p, weights, ~held, iterations, tolerance, deadline)
        shot = {k: v.detach().clone() for k, v in field.state_dict().items()}
        s_shot = p.s.detach().clone()
        scores = {}
        for name, weights_of in (("start", start), ("shot", shot)):
            field.load_state_dict(weights_of)
            with torch.no_grad():
                p.s.copy_(s_start)
            _minimise(p, [], held, _HELD_ITERATIONS, tolerance, math.inf)
            scores[name] = p.forecast_error(held)
        info.update({"shooting_held_out_start": scores["start"],
                     "shooting_held_out": scores["shot"]})
        if not scores["shot"] < scores["start"]:  # not worth keeping (or NaN): the start stays
            field.load_state_dict(start)
            with torch.no_grad():
                p.s.copy_(s_start)
            info["shooting_kept"] = 0
        else:
            field.load_state_dict(shot)
            with torch.no_grad():  # the held-out states as the shot field's refit left them
                p.s[~held] = s_shot[~held]
            _, more = _minimise(p, weights, every, iterations // 2, tolerance, deadline)
            done += more
    else:
        _, done = _minimise(p, weights, every, iterations, tolerance, deadline)
    with torch.no_grad():
        m, g = p.parts(every)
    info.update({"shooting_misfit": math.sqrt(float(m)), "shooting_gap": math.sqrt(float(g)),
                 "shooting_iterations": done, "shooting_wall_time": time.perf_counter() - t0})
    return info
