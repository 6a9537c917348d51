"""odesolve: batched explicit Runge-Kutta with per-example step control and statistics.

Three drivers share one stepper (:mod:`dynfit.solvers.stepper`): fixed steps
(``step_size``), the step loop (per-example adaptive steps, finished examples
masked out; controllers with ``driver = "step"``: :class:`MixedNorm`,
:class:`PIController`) and the interval loop (one attempt per output interval,
uniform substeps where it is rejected; ``driver = "interval"``: :class:`PaperRule`).
The loops ask the controller for the error measure and the decision
(:mod:`dynfit.solvers.control` describes the contract); they never compute either.
"""
from __future__ import annotations

import math
import weakref
from types import MappingProxyType
from typing import Callable

import torch

from _dyncore import checks

from .control import Controller, MixedNorm, check_controller
from .solution import Solution, SolverError, Stats, Status, failure_message
from .stepper import FieldCounter, _combo, _weights, rk_stages, rk_step
from .tableau import METHODS, torch_tableau

__all__ = ["odesolve", "DEVICE_DEFAULTS"]

#: odesolve's per-device defaults of ``sync_every`` and ``fused`` (a device not listed takes
#: "cuda"'s): on a CPU a host read is free and fewer dispatched ops win; on a GPU fewer host
#: reads and fewer kernel launches win (benchmarks/bench_solvers.py measures both)
DEVICE_DEFAULTS = MappingProxyType({
    "cpu": MappingProxyType({"sync_every": 1, "fused": False}),
    "cuda": MappingProxyType({"sync_every": 8, "fused": True}),
})

_DEFAULT_CONTROL = MixedNorm(rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- input checks
def _check_inputs(field, y0, t, method, control, reference, max_steps, h0, step_size):
    if not callable(field):
        raise TypeError(f"field must be callable as field(t, y) -> dy/dt, "
                        f"got {type(field).__name__}")
    if not isinstance(y0, torch.Tensor) or not y0.is_floating_point():
        dtype = f" of dtype {y0.dtype}" if isinstance(y0, torch.Tensor) else ""
        raise TypeError(f"y0 must be a floating-point torch.Tensor of shape (B, D), "
                        f"got {type(y0).__name__}{dtype}")
    if y0.ndim != 2 or y0.shape[0] == 0 or y0.shape[1] == 0:
        hint = " (for a single state use y0.unsqueeze(0))" if y0.ndim == 1 else ""
        raise ValueError(f"y0 must have shape (B, D) with B, D >= 1, got {tuple(y0.shape)}{hint}")
    bad = (~torch.isfinite(y0.detach()).all(dim=1)).nonzero().flatten().tolist()
    if bad:
        more = " ..." if len(bad) > 20 else ""
        raise ValueError(f"y0 holds NaN or inf in examples {bad[:20]}{more} "
                         f"({len(bad)} of {y0.shape[0]}); clean or drop those initial states")
    if isinstance(t, torch.Tensor):
        ts = t.detach().to(device=y0.device, dtype=y0.dtype)
    else:
        try:
            ts = torch.as_tensor(t, dtype=y0.dtype, device=y0.device)
        except (TypeError, ValueError):
            raise TypeError(f"t must be a 1-D tensor of output times, "
                            f"got {type(t).__name__}") from None
    if ts.ndim != 1 or ts.numel() < 2:
        raise ValueError(f"t must be a 1-D tensor of at least 2 output times (start and end), "
                         f"got shape {tuple(ts.shape)}")
    if not bool(torch.isfinite(ts).all()):
        raise ValueError(f"t must be finite, got {ts.tolist()[:10]}")
    dt = ts[1:] - ts[:-1]
    if not (bool((dt > 0).all()) or bool((dt < 0).all())):
        i = int(((dt <= 0) if dt[0] > 0 else (dt >= 0)).nonzero()[0]) if dt[0] != 0 else 0
        raise ValueError(f"t must be strictly increasing or strictly decreasing; "
                         f"t[{i}]={ts[i].item()!r}, t[{i + 1}]={ts[i + 1].item()!r} break it "
                         f"(sort the times and drop duplicates)")
    checks.choice("method", method, METHODS, fix="pass the name of a Runge-Kutta tableau")
    tab = torch_tableau(method)
    if step_size is not None:
        if reference is not None:
            raise ValueError("reference steers the adaptive error control; with step_size it would "
                             "have no effect: drop step_size (adaptive) or drop reference")
        checks.positive("step_size", step_size,
                        fix="pass a positive step for fixed steps, or None for adaptive ones")
    else:
        check_controller(control)
        if not tab.adaptive:
            adaptive = [m for m in METHODS if torch_tableau(m).adaptive]
            raise ValueError(f"method {method!r} has no embedded error estimate: pass "
                             f"step_size=... for fixed steps, or use an adaptive method "
                             f"({adaptive})")
    checks.integer("max_steps", max_steps, minimum=1,
                   fix="pass the most steps an example may take, e.g. 10000")
    checks.positive("h0", h0, optional=True,
                    fix="pass a positive first step, or None to choose it automatically")
    ref = None
    if reference is not None:
        if not isinstance(reference, torch.Tensor):
            raise TypeError(f"reference must be a tensor (T, B, D) or (B, D) when T == 2, "
                            f"got {type(reference).__name__}")
        T, (B, D) = ts.numel(), y0.shape
        ref = reference.detach().to(device=y0.device, dtype=y0.dtype)
        if ref.ndim == 2 and T == 2:
            ref = ref.unsqueeze(0).expand(2, B, D)
        if tuple(ref.shape) != (T, B, D):
            alt = " or (B, D)" if T == 2 else ""
            raise ValueError(f"reference must have shape (T, B, D) = {(T, B, D)}{alt}, "
                             f"got {tuple(reference.shape)}")
        badr = (~torch.isfinite(ref[1:]).all(dim=2).all(dim=0)).nonzero().flatten().tolist()
        if badr:
            raise ValueError(f"reference holds NaN or inf for examples {badr[:20]}; "
                             "clean the targets")
    return ts, tab, ref


# ----------------------------------------------------------------------------- helpers
class _Tracker:
    """Per-example statistics (B,) of a solve, and its outputs: the recorded rows (n, D)
    (``records``, ``n_rows`` in all) and where each output sits among them (``rec`` (T + 1, B),
    -1 where not reached; row T is a spare for unreached slots). The interval loop also fills
    the per-interval histories ``hist_err``, ``hist_acc``, ``hist_sub`` (T - 1, B)."""

    __slots__ = ("n_acc", "n_rej", "evals", "status", "substeps", "err", "acc_all", "h",
                 "t_reached", "records", "n_rows", "rec", "hist_err", "hist_acc", "hist_sub")

    def __init__(self, y0: torch.Tensor, T: int):
        B, dev, dt = y0.shape[0], y0.device, y0.dtype
        z = lambda: torch.zeros(B, dtype=torch.int64, device=dev)  # noqa: E731
        self.n_acc, self.n_rej, self.evals, self.status = z(), z(), z(), z()
        self.substeps = torch.ones(B, dtype=torch.int64, device=dev)
        self.err = torch.full((B,), float("nan"), dtype=dt, device=dev)
        self.acc_all = torch.ones(B, dtype=torch.bool, device=dev)
        self.h = torch.zeros(B, dtype=dt, device=dev)
        self.t_reached = torch.zeros(B, dtype=dt, device=dev)
        self.records, self.n_rows = [y0], B
        self.rec = torch.full((T + 1, B), -1, dtype=torch.int64, device=dev)
        self.rec[0] = torch.arange(B, device=dev)
        self.hist_err = self.hist_acc = self.hist_sub = None

    def start_histories(self) -> None:
        """Allocate the per-interval histories (T - 1, B) (interval loop)."""
        (T1, B), dev = self.rec.shape, self.rec.device
        shape = (T1 - 2, B)
        self.hist_err = torch.full(shape, float("nan"), dtype=self.err.dtype, device=dev)
        self.hist_acc = torch.zeros(shape, dtype=torch.bool, device=dev)
        self.hist_sub = torch.zeros(shape, dtype=torch.int64, device=dev)

    def record(self, rows: torch.Tensor, pos: torch.Tensor, j: torch.Tensor, ex: torch.Tensor):
        """Output j[i] of example ex[i] is rows[pos[i]]; rows (n, D)."""
        self.rec[j, ex] = self.n_rows + pos
        self.records.append(rows)
        self.n_rows += rows.shape[0]

    def outputs(self) -> torch.Tensor:
        """(T, B, D); NaN where an output was not reached."""
        y0 = self.records[0]
        nan = torch.full((1, y0.shape[1]), float("nan"), dtype=y0.dtype, device=y0.device)
        rows = torch.cat(self.records + [nan])
        rec = self.rec[:-1]
        return rows[torch.where(rec < 0, self.n_rows, rec)]

    def stats(self, counter: FieldCounter, method: str, control: str) -> Stats:
        return Stats(
            n_steps=self.n_acc + self.n_rej, n_accepted=self.n_acc.clone(),
            n_rejected=self.n_rej.clone(), error_rate=self.err, accepted=self.acc_all,
            substeps=self.substeps, h=self.h, status=self.status,
            n_f_evals_per_example=self.evals, n_f_evals=counter.calls, counter=counter,
            method=method, control=control, interval_error_rate=self.hist_err,
            interval_accepted=self.hist_acc, interval_substeps=self.hist_sub,
        )


def _rms(x: torch.Tensor, batch: bool = False) -> torch.Tensor:
    """(B,) RMS of each row of x (B, D); batch=True: the RMS of all of x, repeated."""
    if batch:
        return x.square().mean().sqrt().expand(x.shape[0])
    return x.square().mean(dim=1).sqrt()


def _initial_step(counter, t0, y0, f0, direction, order, ctrl: Controller) -> torch.Tensor:
    """Hairer-Norsett-Wanner starting step per example (one extra evaluation); (B,) positive.

    Reads the controller's rtol, atol, norm and per_example (step-loop controllers)."""
    with torch.no_grad():
        y0, f0 = y0.detach(), f0.detach()
        scale = ctrl.atol + ctrl.rtol * y0.abs()
        batch = ctrl.norm == "batch"
        d0, d1 = _rms(y0 / scale, batch), _rms(f0 / scale, batch)
        h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
        if not ctrl.per_example:
            h0 = h0.min().expand_as(h0)
        hs = (direction * h0).unsqueeze(1)
        tt = (t0 + hs) if ctrl.per_example else (t0 + hs[0, 0])
        f1 = counter(tt, y0 + hs * f0)
        d2 = _rms((f1 - f0) / scale, batch) / h0
        dm = torch.maximum(d1, d2)
        h1 = torch.where(dm <= 1e-15, torch.clamp(h0 * 1e-3, min=1e-6),
                         (0.01 / dm).pow(1.0 / (order + 1)))
        h = torch.minimum(100 * h0, h1)
        # a NaN field: start from 1e-6 and shrink to NONFINITE
        h = torch.where(torch.isfinite(h), h, torch.full_like(h, 1e-6))
        return h if ctrl.per_example else h.min().expand_as(h).clone()


def _retake_finite(counter, t, h, y, ks, tab, finite, per_ex: bool):
    """Redo a step on its finite rows only, so that no NaN/inf enters the autograd graph
    (a masked-out NaN still turns gradients into NaN: 0 * inf). Rows that overflowed get
    y_high = y (detached; they are rejected) and an infinite error.
    Returns (y_hi, err, ks, rows)."""
    rows = finite.nonzero().flatten()
    base = y.detach()
    inf = torch.full_like(base, math.inf)
    if rows.numel() == 0:
        return base, inf, [ks[0]] + [torch.zeros_like(base)] * (tab.stages - 1), rows
    ts_, hs_ = (t[rows], h[rows]) if per_ex else (t, h)
    y_s, e_s, ks_s = rk_step(counter, ts_, hs_, y[rows], ks[0][rows], tab)
    ks_full = [ks[0]] + [torch.zeros_like(base).index_copy(0, rows, k) for k in ks_s[1:]]
    return base.index_copy(0, rows, y_s), inf.index_copy(0, rows, e_s), ks_full, rows


# ----------------------------------------------------------------------------- drivers
def _solve_fixed(counter, y0, ts, tab, step_size, max_steps, tr: _Tracker):
    times = ts.tolist()
    ns = [max(1, math.ceil(abs(b - a) / step_size * (1 - 1e-12)))
          for a, b in zip(times[:-1], times[1:])]
    if sum(ns) > max_steps:
        raise ValueError(f"step_size={step_size} needs {sum(ns)} steps over t, more than "
                         f"max_steps={max_steps}; raise max_steps or the step size")
    B = y0.shape[0]
    y, k1 = y0, None
    alive = torch.ones(B, dtype=torch.bool, device=y0.device)
    arange = torch.arange(B, device=y0.device)
    for jj, n in enumerate(ns, start=1):
        h = (times[jj] - times[jj - 1]) / n
        for k in range(n):
            tk = ts[jj - 1] + k * h
            y, _, ks = rk_step(counter, tk, h, y, k1, tab, with_error=False)
            k1 = ks[-1] if tab.fsal else None
        tr.evals += n * tab.stages - (n if tab.fsal else 0) + int(tab.fsal and jj == 1)
        fin = torch.isfinite(y.detach()).all(dim=1)
        newly = alive & ~fin
        tr.status = torch.where(newly, int(Status.NONFINITE), tr.status)
        alive &= fin
        slots = torch.full((int(alive.sum()),), jj, device=y.device)
        tr.record(y, arange[alive], slots, arange[alive])
        tr.substeps.fill_(n)
        tr.h.fill_(abs(h))
        tr.n_acc += torch.where(alive | newly, n, 0)
    return tr


def _solve_interval(counter, y0, ts, tab, ctrl: Controller, ref, max_steps, tr: _Tracker):
    """One attempt per output interval H; where the controller rejects it, |H| / h_next
    uniform substeps (one shared count, scalar time, when ctrl.per_example is False)."""
    B = y0.shape[0]
    dev = y0.device
    T = ts.numel()
    tr.start_histories()
    state = ctrl.init(B, y0.dtype, dev)
    times = ts.tolist()
    y = y0
    alive = torch.ones(B, dtype=torch.bool, device=dev)
    for jj in range(1, len(times)):
        idx = alive.nonzero().flatten()
        na = idx.numel()
        if na == 0:
            break
        full = na == B
        ya = y if full else y[idx]
        H = times[jj] - times[jj - 1]
        t0 = ts[jj - 1]
        y_hi, err, ks = rk_step(counter, t0, H, ya, None, tab)
        k1 = ks[0]
        finite = torch.isfinite(y_hi.detach()).all(dim=1)
        if y_hi.requires_grad and not bool(finite.all()):
            y_hi, err, ks, rows = _retake_finite(counter, t0, H, ya, ks, tab, finite, False)
            tr.evals.index_add_(0, idx[rows], torch.full_like(rows, tab.stages - 1))
        if ref is not None:
            err = ref[jj, idx] - y_hi.detach()
        r = ctrl.error(err, ya, y_hi, H, finite)
        accept, h_next, new = ctrl.adapt(r, abs(H), tuple(x[idx] for x in state), tab.order_low)
        state = tuple(x.index_copy(0, idx, v) for x, v in zip(state, new))
        n = torch.round(abs(H) / h_next).to(torch.int64)  # substeps (1 where accepted)
        rej = (~accept).nonzero().flatten()
        y_new = y_hi
        if rej.numel():
            nr = n[rej]
            n_max = int(nr.max())
            yr, k1r = ya[rej], k1[rej]
            hr = H / nr.to(ya.dtype)
            for k in range(n_max):
                m = (k < nr).nonzero().flatten()
                sub_all = m.numel() == nr.numel()
                ym = yr if sub_all else yr[m]
                if not ctrl.per_example:  # one substep count: shared scalar time and step
                    hk = H / n_max
                    k1m = k1r if k == 0 else None
                    ys = rk_step(counter, t0 + k * hk, hk, ym, k1m, tab, with_error=False)[0]
                else:
                    hm = hr if sub_all else hr[m]
                    k1m = None if k > 0 else (k1r if sub_all else k1r[m])
                    ys = rk_step(counter, t0 + k * hm, hm.unsqueeze(1), ym, k1m, tab,
                                 with_error=False)[0]
                yr = ys if sub_all else yr.index_copy(0, m, ys)
            y_new = y_hi.index_copy(0, rej, yr)
        # statistics
        s = tab.stages
        ev = torch.where(accept, s, s + n * s - 1)
        tr.evals.index_add_(0, idx, ev)
        tr.err[idx] = r
        tr.hist_err[jj - 1, idx], tr.hist_acc[jj - 1, idx] = r, accept
        tr.hist_sub[jj - 1, idx] = n
        tr.acc_all[idx] &= accept
        tr.substeps[idx] = n
        tr.h[idx] = h_next
        tr.n_acc[idx] += torch.where(accept, 1, n)
        tr.n_rej[idx] += (~accept).long()
        fin = torch.isfinite(y_new.detach()).all(dim=1)
        # the step limit reached before the end
        over = ((tr.n_acc[idx] + tr.n_rej[idx]) >= max_steps) & (jj < T - 1)
        tr.status[idx] = torch.where(~fin, int(Status.NONFINITE),
                                     torch.where(over, int(Status.MAX_STEPS), 0))
        ok = fin & ~over
        alive[idx] = ok
        y = y_new if full else y.index_copy(0, idx, y_new)
        slots = torch.full((int(ok.sum()),), jj, device=dev)
        tr.record(y_new, ok.nonzero().flatten(), slots, idx[ok])
    return tr


class _Rows:
    """Per-example state of the examples still integrating, one row each; compacted when some stop.

    idx (n,) example of each row; y, k1 (n, D) state and f(t, y); s (n,) time times the
    direction (so that it increases); h (n,) next step size (> 0); j (n,) next output to fill;
    n_acc (n,) accepted steps; err, err_set (n,) error of the first attempt reaching into the
    last output interval; sub (n,) accepted steps ending inside it; ctrl: the controller's
    state, a tuple of (n,) tensors; ref_tried (n,) the reference already judged an attempt on
    this interval. Reading every few steps (lazy): active (n,) not stopped yet; stop_it,
    stop_finite (n,) the iteration an example stopped at and whether its last step was finite;
    h_last (n,) its last step size (None when not lazy).
    """

    __slots__ = ("idx", "y", "k1", "s", "h", "j", "n_acc", "err", "err_set", "sub", "ctrl",
                 "ref_tried", "active", "stop_it", "stop_finite", "h_last")

    def __init__(self, **state):
        for name in self.__slots__:
            setattr(self, name, state.pop(name, None))
        if state:
            raise TypeError(f"_Rows: unknown fields {sorted(state)}")

    def take(self, keep: torch.Tensor) -> None:
        """Keep the rows ``keep`` (n',) of every field."""
        for name in self.__slots__:
            v = getattr(self, name)
            if name == "ctrl":
                setattr(self, name, tuple(x[keep] for x in v))
            elif v is not None:
                setattr(self, name, v[keep])


class _Resync(Exception):
    """A step overflowed while the host was read only every few steps: redo the solve reading
    every step.

    evals (B,): the evaluations each example took part in before (counted in the redone
    solve's stats).
    """

    def __init__(self, evals: torch.Tensor):
        super().__init__("resync")
        self.evals = evals


def _record_outputs(tr: _Tracker, rec, n_out: int, idx, T, tsd, powers, dense, per_ex, land_each,
                    offsets):
    """Record the outputs that one step passed (rec: the step's tensors), all at once."""
    y, _, s, j, he, hs, y_hi, ks, s_new, j_new, _ = rec
    n, D = y.shape
    jk = j.unsqueeze(1) + offsets[:n_out]  # (n, n_out)
    reach = jk < j_new.unsqueeze(1)
    if land_each:
        y_out = y_hi.unsqueeze(1)
    else:
        with torch.no_grad():
            t_out = tsd[jk.clamp(max=T - 1)]
            # frozen rows: he = 0
            theta = torch.where(reach, (t_out - s.unsqueeze(1)) / he.unsqueeze(1), 0.0)
            weights = theta.unsqueeze(2).pow(powers) @ dense  # (n, n_out, S)
            exact = (t_out == s_new.unsqueeze(1)).unsqueeze(2)
        y_out = torch.addcmul(y.unsqueeze(1), hs.unsqueeze(1) if per_ex else hs,
                              torch.bmm(weights, torch.stack(ks, 1)))
        y_out = torch.where(exact, y_hi.unsqueeze(1), y_out)
    slots = torch.where(reach, jk, T)  # unreached: the spare row T of rec
    tr.rec[slots, idx.unsqueeze(1).expand(n, n_out)] = torch.arange(
        tr.n_rows, tr.n_rows + n * n_out, device=y.device).view(n, n_out)
    tr.records.append(y_out.reshape(n * n_out, D))
    tr.n_rows += n * n_out


def _solve_adaptive(counter, y0, ts, tab, ctrl: Controller, ref, max_steps, h0, tr: _Tracker,
                    fused: bool, sync_every: int = 1):
    """Per-example adaptive steps on the compacted batch of unfinished examples.

    Without a reference, steps run freely to t[-1] (never past it) and intermediate
    outputs come from dense output, all outputs a step passes at once; with a reference
    every output time is landed on, so that the step ending there can be judged against
    the reference. Step-size decisions stay on the device; the host is read once every
    ``sync_every`` steps (how many outputs each step passed, whether an example stopped
    or overflowed), never inside a step. Between reads, stopped examples stay in the
    batch, frozen (steps of size 0, not counted as steps). An overflow found at a read
    when ``sync_every > 1`` raises _Resync (the solve is redone reading every step, where
    an overflowing step is retaken on its finite rows before autograd sees it).
    """
    B, D = y0.shape
    dev, dtype = y0.device, y0.dtype
    T = ts.numel()
    forward = bool(ts[-1] > ts[0])
    tsd = ts if forward else -ts  # increasing
    t_ends = ts[[0, -1]].abs().tolist()
    # smallest step: 8 eps times the largest |t| or the span (within 2x of the per-step bound
    # max(|t|, span))
    h_min = 8 * torch.finfo(dtype).eps * max(t_ends + [abs(float(ts[-1] - ts[0]))])
    per_ex = ctrl.per_example
    land_each = ref is not None
    order = tab.order_low
    s_last = float(tsd[-2])  # start of the last output interval (direction-adjusted)
    t_end = tsd[-1]
    _, dense, c_vec = _weights(tab, dtype, dev)
    c_row = c_vec.unsqueeze(0)
    powers = torch.arange(1, 5, dtype=dtype, device=dev)
    out_offsets = torch.arange(T, device=dev)
    stages = tab.stages

    calls0 = counter.calls
    k1 = counter(ts[0], y0)
    if h0 is None:
        h = _initial_step(counter, ts[0], y0, k1, 1.0 if forward else -1.0, tab.order, ctrl)
    else:
        h = torch.full((B,), float(h0), dtype=dtype, device=dev)
    n_pre = counter.calls - calls0  # evaluations before the first step, shared by all examples
    zeros_i = torch.zeros(B, dtype=torch.int64, device=dev)
    falses = torch.zeros(B, dtype=torch.bool, device=dev)
    st = _Rows(idx=torch.arange(B, device=dev), y=y0, k1=k1, s=tsd[0].expand(B).clone(), h=h,
               j=torch.ones(B, dtype=torch.int64, device=dev), n_acc=zeros_i,
               err=torch.full((B,), math.nan, dtype=dtype, device=dev), err_set=falses, sub=zeros_i,
               ctrl=ctrl.init(B, dtype, dev), ref_tried=falses)
    extra = torch.zeros(B, dtype=torch.int64, device=dev)  # evaluations of retaken steps
    n_steps = torch.zeros(B, dtype=torch.int64, device=dev)
    n_batch = torch.zeros(B, dtype=torch.int64, device=dev)  # steps each stayed in the batch
    lazy = sync_every > 1  # stopped rows are frozen in the batch until the next read
    if lazy:
        st.active, st.stop_it, st.stop_finite, st.h_last = ~falses, zeros_i, ~falses, h
    pending = []  # steps since the last host read: their outputs are recorded at the read
    it = 0
    while st.idx.numel():
        it += 1
        n = st.idx.numel()
        jt = st.j.clamp(max=T - 1) if lazy else st.j  # frozen finished rows have j == T
        target = tsd[jt] if land_each else t_end
        rem = target - st.s
        lands = st.h >= rem
        he = torch.minimum(st.h, rem)
        hd, sf = (he, st.s) if forward else (-he, -st.s)  # signed step, field time
        if per_ex:
            hs, t0 = hd.unsqueeze(1), sf
            times = torch.addcmul(sf.unsqueeze(1), hs, c_row).split(1, dim=1)
        else:
            hs, t0 = hd[0], sf[0]
            times = torch.addcmul(t0, hs, c_vec).unbind(0)
        y_hi, ks = rk_stages(counter, times, hs, st.y, st.k1, tab, fused)
        with torch.no_grad():  # decisions: detached, on the device
            v = y_hi.sum(1) + ks[-1].sum(1)
            finite = (v - v) == 0  # isfinite in 2 ops instead of 4: inf - inf and NaN are NaN
            ev = _combo(tab.e, ks) * hs
            # the first attempt ending on the output time is judged against the reference
            if land_each:
                use_ref = lands & ~st.ref_tried
                ev = torch.where(use_ref.unsqueeze(1), ref[jt, st.idx] - y_hi, ev)
            e = ctrl.error(ev, st.y, y_hi, hd, finite)
            accept, h_new, ctrl_state = ctrl.adapt(e, he, st.ctrl, order)
            if land_each:
                h_new = torch.where(accept & lands, torch.maximum(h_new, st.h), h_new)
                st.ref_tried = (st.ref_tried | lands) & ~(accept & lands)
            s_step = st.s + he
            s_new = torch.where(accept, torch.where(lands, target, s_step), st.s)
            j_new = torch.searchsorted(tsd, s_new, right=True)  # tsd[j - 1] <= s < tsd[j]
            counts = accept if not lazy else accept & st.active  # frozen rows take steps of size 0
            st.err = torch.where(st.err_set if not lazy else st.err_set | ~st.active, st.err, e)
            st.err_set = st.err_set | (s_step > s_last)
            st.sub = st.sub + (counts & (s_new > s_last))
            st.n_acc = st.n_acc + counts
            done = j_new >= T
            under = h_new < h_min
            stop = done | under
            if lazy:
                st.h_last = torch.where(st.active, he, st.h_last)
                newly = stop & st.active
                st.stop_it = torch.where(newly, it, st.stop_it)
                st.stop_finite = torch.where(newly, finite, st.stop_finite)
                st.active = st.active & ~stop
                h_new = torch.where(stop, 0.0, h_new)  # frozen: he = 0 from now on
            pending.append((st.y, st.k1, st.s, st.j, he, hs, y_hi, ks, s_new, j_new, finite))
        acc2 = accept.unsqueeze(1)
        y_prev, k1_prev = st.y, st.k1
        if lazy:
            st.y = torch.where(acc2, y_hi, y_prev)
            st.k1 = torch.where(acc2, ks[-1], k1_prev)
        st.s, st.h, st.j, st.ctrl = s_new, h_new, j_new, ctrl_state
        maxed = it >= max_steps
        if lazy and not maxed and len(pending) < sync_every:
            continue
        # the host read: outputs passed by each pending step, whether an example stopped, overflow
        # (and, reading every step, whether every row accepted: then the new state needs no select)
        with torch.no_grad():
            flags = torch.stack([x for p in pending for x in ((p[9] - p[3]).max(), p[10].all())]
                                + [stop.any() if not lazy else (~st.active).any()]
                                + ([] if lazy else [accept.all()])).tolist()
        k = len(pending)
        n_outs, overflow, flags = flags[0:2 * k:2], not all(flags[1:2 * k:2]), flags[2 * k:]
        if not lazy:
            # all accepted: the same values and gradients as the select, two nodes fewer
            if flags.pop():
                st.y, st.k1 = y_hi, ks[-1]
            else:
                st.y = torch.where(acc2, y_hi, y_prev)
                st.k1 = torch.where(acc2, ks[-1], k1_prev)
        if overflow:  # some rows overflowed
            # reading every few steps: redo the solve reading every step, so that overflowing
            # steps are retaken
            if lazy and y_hi.requires_grad:
                n_batch[st.idx] = it
                raise _Resync(n_pre + (stages - 1) * n_batch + extra)
            if y_hi.requires_grad:  # retake the step on its finite rows, so no NaN enters autograd
                y, k1, *rest, ks, s_new, j_new, finite = pending[-1]
                y_hi, _, ks, rows = _retake_finite(counter, t0, hs, y, ks, tab, finite, per_ex)
                extra.index_add_(0, st.idx[rows], torch.full_like(rows, stages - 1))
                pending[-1] = (y, k1, *rest[:4], y_hi, ks, s_new, j_new, finite)
                st.y = torch.where(acc2, y_hi, y)
                st.k1 = torch.where(acc2, ks[-1], k1)
        for rec, n_out in zip(pending, n_outs):
            if n_out:
                _record_outputs(tr, rec, n_out, st.idx, T, tsd, powers, dense, per_ex, land_each,
                                out_offsets)
        pending = []
        if flags[-1] or maxed:
            if not lazy:
                stopped, stop_it, stop_finite = stop, it, finite
            else:
                stopped, stop_it, stop_finite = ~st.active, st.stop_it, st.stop_finite
            if maxed:
                stopped = torch.ones_like(stopped)
                if lazy:
                    stop_it = torch.where(st.active, it, stop_it)
            done = st.j >= T
            under = ~done & (st.h < h_min)
            failure = torch.where(stop_finite, int(Status.STEP_UNDERFLOW), int(Status.NONFINITE))
            status = torch.where(done, int(Status.SUCCESS),
                                 torch.where(under, failure, int(Status.MAX_STEPS)))
            sel = stopped.nonzero().flatten()
            ex = st.idx[sel]
            n_steps[ex] = stop_it if not lazy else stop_it[sel]
            n_batch[ex] = it
            tr.n_acc[ex] = st.n_acc[sel]
            tr.err[ex] = torch.where(st.err_set[sel], st.err[sel], math.nan)
            he_last = he if not lazy else st.h_last
            tr.substeps[ex], tr.h[ex], tr.status[ex] = st.sub[sel], he_last[sel], status[sel]
            tr.t_reached[ex] = st.s[sel] if forward else -st.s[sel]
            st.take((~stopped).nonzero().flatten())
    tr.n_rej = n_steps - tr.n_acc
    tr.acc_all = tr.n_rej == 0
    tr.evals += n_pre + (stages - 1) * n_batch + extra
    return tr


_COMPILED: "weakref.WeakKeyDictionary | dict" = weakref.WeakKeyDictionary()


def _compiled(field):
    """torch.compile(field, dynamic=True), once per field object (the batch shrinks as examples
    finish)."""
    try:
        return _COMPILED[field]
    except (KeyError, TypeError):  # TypeError: a field that cannot be weakly referenced
        fn = torch.compile(field, dynamic=True)
        try:
            _COMPILED[field] = fn
        except TypeError:
            pass
        return fn


# ----------------------------------------------------------------------------- entry point
def odesolve(
    field: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    y0: torch.Tensor,
    t: torch.Tensor,
    *,
    method: str = "rkf45",
    control: Controller = _DEFAULT_CONTROL,
    reference: torch.Tensor | None = None,
    max_steps: int = 10_000,
    h0: float | None = None,
    step_size: float | None = None,
    raise_on_failure: bool = True,
    compile: bool = False,
    sync_every: int | None = None,
    fused: bool | None = None,
) -> Solution:
    """Solve dy/dt = field(t, y) from y0 (B, D) and return y at the output times t (T,).

    field(t, y) -> (B', D) for y (B', D): B' is the number of examples still
    integrating (finished ones are masked out). t is a 0-dim tensor when the
    examples share their time (fixed steps, PaperRule(shared=True), MixedNorm or
    PIController with per_example=False or norm="batch") and a (B', 1) tensor of
    per-example times otherwise; a time-invariant field ignores it.

    method: a tableau name ("rkf45", "rkf23", "dopri5", "rk4" - fixed steps only).
    control: a step-size controller (:mod:`dynfit.solvers.control`): MixedNorm(rtol, atol),
        PIController(rtol, atol) or PaperRule(eps, ...); unused with step_size.
    reference: targets (T, B, D) (or (B, D) if T == 2), detached. PaperRule: the attempt
        on each interval is judged by r = |reference - A2|_1 / h. Step controllers: the first
        attempt that ends on an output time is judged against the reference; if it is
        rejected, the rest of that interval uses the embedded estimate (the reference
        error need not shrink with h, so it only decides whether to refine).
    max_steps: per-example limit on attempted steps. h0: first step (adaptive);
    step_size: fixed steps (each output interval split into ceil(H / step_size) equal steps).
    compile: evaluate the field through ``torch.compile(field, dynamic=True)`` (cached per
        field object; opt-in: compiling takes seconds to minutes and pays off only where the
        field's kernels dominate - see docs/solvers.md for the measured ratios).
    raise_on_failure: raise SolverError (carrying .stats and .solution) when an
        example fails; False returns the Solution with Stats.status set and NaN outputs.
    sync_every, fused: how the step loop runs (step controllers only; None: the device's
        default in :data:`DEVICE_DEFAULTS`). sync_every: read the host once every that many
        steps (stopped examples stay frozen in the batch in between); fused: form each stage
        sum as one contraction over the stacked stages (False: a chain of additions). Neither
        changes the steps taken; fused changes the rounding of the stage sums.

    Returns Solution(ts (T,), ys (T, B, D), stats). Differentiable in y0 and the field's
    parameters by plain backprop through the steps; step-size decisions are detached.
    """
    ts, tab, ref = _check_inputs(field, y0, t, method, control, reference, max_steps, h0,
                                 step_size)
    checks.boolean("compile", compile,
                   fix="pass compile=True to torch.compile the field, else False")
    defaults = DEVICE_DEFAULTS.get(y0.device.type, DEVICE_DEFAULTS["cuda"])
    if sync_every is None:
        sync_every = defaults["sync_every"]
    if fused is None:
        fused = defaults["fused"]
    sync_every = checks.integer("sync_every", sync_every, minimum=1,
                                fix="pass how many steps between host reads (1: every step), "
                                    "or None for the device's default")
    fused = checks.boolean("fused", fused,
                           fix="pass True, False or None (None: the device's default)")
    counter = FieldCounter(_compiled(field) if compile else field)
    tr = _Tracker(y0, ts.numel())
    step_loop = step_size is None and control.driver == "step"
    if step_size is not None:
        ctrl_name = f"fixed(step_size={step_size})"
        _solve_fixed(counter, y0, ts, tab, float(step_size), max_steps, tr)
    elif not step_loop:
        ctrl_name = str(control)
        _solve_interval(counter, y0, ts, tab, control, ref, max_steps, tr)
    else:
        ctrl_name = str(control)
        args = (y0, ts, torch_tableau(method, fsal=True), control, ref, max_steps, h0)
        try:
            _solve_adaptive(counter, *args, tr, fused, sync_every)
        except _Resync as redo:  # the field calls already made stay counted
            tr = _Tracker(y0, ts.numel())
            tr.evals += redo.evals
            _solve_adaptive(counter, *args, tr, fused, 1)
    stats = tr.stats(counter, method, ctrl_name)
    sol = Solution(ts=ts, ys=tr.outputs(), stats=stats)
    if raise_on_failure and not stats.success:
        adaptive = step_loop
        t_reached = tr.t_reached if adaptive else ts[(tr.rec[:-1] >= 0).sum(0) - 1]
        raise SolverError(failure_message(stats, t_reached, max_steps), stats, sol)
    return sol
