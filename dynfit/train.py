"""``fit``: train a Neural ODE surrogate from trajectories, with a strategy, checkpoints and a history."""
from __future__ import annotations

import copy
import difflib
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import strategies as _strategies
from .data import Standardizer, as_trajectories, make_windows
from .surrogate import Surrogate, build_field

__all__ = ["fit", "CHECKPOINT", "DEFAULT_FIELD"]

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = "dynfit-checkpoint-1"
DEFAULT_FIELD = {"kind": "poly", "degree": 2, "width": 32, "depth": 2, "activation": "silu"}
DEFAULT_STRATEGY = "continuous"
STALL = 1e-9  # an epoch whose loss moved by less than this (relative) changed nothing
HISTORY_VARS = ("loss", "misfit", "rtol", "accepted_fraction", "mean_substeps", "max_substeps", "mean_steps",
                "n_f_evals", "horizon", "lr", "wall_time", "retries", "restarts")
HISTORY_UNITS = {"loss": "squared standardised units", "misfit": "standardised units (RMS per component)",
                 "rtol": "relative tolerance of the training solver", "wall_time": "s",
                 "mean_steps": "solver steps attempted per sample", "horizon": "samples per window",
                 "n_f_evals": "field evaluations summed over examples"}
NAN_RETRIES = 3


def _device(device) -> torch.device:
    if device is None:
        if not torch.cuda.is_available():
            return torch.device("cpu")
        local = os.environ.get("LOCAL_RANK")  # torchrun: one GPU per process
        return torch.device(f"cuda:{int(local) % torch.cuda.device_count()}" if local else "cuda")
    return torch.device(device)


def _reducer(ddp, n_total: int):
    """(sum of squares, count) over this rank's windows -> over all ranks; identity in one process."""
    if ddp is None:
        return None

    def reduce(sq: float, count: float) -> tuple[float, float]:
        t = torch.tensor([sq, count], dtype=torch.float64)
        ddp.sum_(t)
        return float(t[0]), float(t[1])

    return reduce


def _loss(ys: torch.Tensor, targets: torch.Tensor, n_total: int | None = None) -> torch.Tensor:
    """Sum of squared errors over components, mean over examples and steps (the paper's for H=1).

    n_total: the number of examples over all ranks (data-parallel): the sum over
    this rank's examples is divided by it, so that the ranks' losses add up.
    """
    sq = (ys - targets[: ys.shape[0]]).pow(2).sum(dim=-1)
    if n_total is None:
        return sq.mean()
    return sq.sum() / (sq.shape[0] * n_total)


def _backward(loss: torch.Tensor, params) -> None:
    """loss.backward(), or zero gradients when no output depends on the weights (every example's
    solve failed, e.g. a NaN field: the loss is NaN and the epoch will be rolled back)."""
    if loss.requires_grad:
        loss.backward()
    else:
        for p in params:
            p.grad = torch.zeros_like(p)


def _merge(summaries: list[tuple[dict, float]]) -> dict:
    """One history row's solver scalars from (summary, weight) pairs (minibatches or ranks)."""
    tot = float(sum(w for _, w in summaries)) or 1.0
    out = {k: sum(w * s_[k] for s_, w in summaries) / tot for k in ("accepted_fraction", "mean_substeps",
                                                                       "mean_steps")}
    out["max_substeps"] = max(s_["max_substeps"] for s_, _ in summaries)
    out["n_f_evals"] = sum(s_["n_f_evals"] for s_, _ in summaries)
    return out


def _fingerprint(field, dim, strategy, optimizer, seed, dtype) -> dict:
    return {
        "field_class": type(field).__name__,
        "shapes": {k: list(v.shape) for k, v in field.state_dict().items()},
        "dim": int(dim),
        "strategy": strategy.name,
        "optimizer": optimizer,
        "seed": int(seed),
        "dtype": str(dtype),
    }


def _save_atomic(obj, path: Path) -> None:
    from .io import save_torch  # atomic (temp, fsync, rename); numpy values stored as plain values

    save_torch(obj, path)


def _finite(field, loss) -> bool:
    if not math.isfinite(loss):
        return False
    return all(bool(torch.isfinite(p).all()) for p in field.parameters())


def _history_dataset(rows: list[dict], attrs: dict):
    import xarray as xr

    n = len(rows)
    data = {}
    for var in HISTORY_VARS:
        vals = [row.get(var, 0 if var == "retries" else np.nan) for row in rows]
        dtype = np.int64 if var in ("max_substeps", "n_f_evals", "horizon", "retries", "restarts") else np.float64
        vals = [0 if (v is None and dtype is np.int64) else (np.nan if v is None else v) for v in vals]
        data[var] = ("epoch", np.asarray(vals, dtype=dtype) if n else np.zeros(0, dtype),
                     {"units": HISTORY_UNITS[var]} if var in HISTORY_UNITS else {})
    clean = {k: v for k, v in attrs.items() if isinstance(v, (str, int, float))}
    return xr.Dataset(data, coords={"epoch": np.arange(n)}, attrs=clean)


def fit(data: Any, *, field: torch.nn.Module | dict | None = None, strategy: Any = DEFAULT_STRATEGY,
        optimizer: str = "lbfgs", epochs: int = 100, seed: int = 0, device=None,
        dtype: torch.dtype = torch.float64, horizon: int = 1, stride: int = 1, standardize: bool = True,
        dt: float | None = None, lr: float | None = None, batch_size: int | None = None,
        lbfgs_iterations: int = 20, lbfgs_tolerance: float = 1e-7, weight_decay: float = 0.0,
        checkpoint_dir=None, resume: bool = True,
        progress: bool = True, on_nan: str = "retry", provenance: dict | None = None,
        strategy_options: dict | None = None, callback=None, prefit: bool | None = None,
        prefit_order: int = 8):
    """Train a surrogate; returns (Surrogate, history xarray.Dataset over ``epoch``).

    data: a systems Dataset, an xarray Dataset/DataArray (trajectory, time,
    component) or numpy (T, D) / (N, T, D). field: a module called field(t, z),
    a config dict for :func:`dynfit.surrogate.build_field`, or None
    (DEFAULT_FIELD: a degree-2 polynomial library plus a small MLP). strategy:
    a name from ``dynfit.strategies.names()`` or a Strategy; the default,
    "continuous", is the best setting we have (see docs/training.md).
    prefit: fit the field to finite-difference derivatives of order
    ``prefit_order`` before the first epoch (:func:`dynfit.prefit.prefit`;
    None: only with the continuous strategy on a fresh start). Training stops
    early when the strategy says it has converged or when two epochs in a row
    change nothing (the second after an L-BFGS restart); the history's attrs
    say why (``stop_reason``). optimizer: "lbfgs" (full batch, lr 1, ``lbfgs_iterations`` per
    epoch, strong Wolfe) or "adam" (cosine learning-rate decay, minibatches of
    ``batch_size``). An L-BFGS epoch ends early once the largest gradient
    component is below ``lbfgs_tolerance`` or the loss or step changes by less
    than a hundredth of it; torch's defaults (1e-7, 1e-9) are absolute, so
    small standardised losses may need a smaller value. Checkpoints go to
    ``checkpoint_dir/checkpoint.pt`` after every epoch (atomic); with
    resume=True an existing one is continued (this call's L-BFGS settings win).
    A non-finite loss or weight rolls back to the weights at the start of the
    epoch; on_nan="retry" then clears the optimizer's memory (L-BFGS history,
    Adam moments) and runs the epoch again, up to NAN_RETRIES times in a row
    (counted in the history's ``retries``), before it warns and stops;
    "stop" warns and stops at once; "raise" raises FloatingPointError.
    callback(epoch, row) runs after each epoch's checkpoint; returning True stops.
    """
    # ----------------------------------------------------------- validation
    from .config import check_fit_arguments

    device = check_fit_arguments(epochs=epochs, seed=seed, lr=lr, batch_size=batch_size,
                                 lbfgs_iterations=lbfgs_iterations, weight_decay=weight_decay,
                                 standardize=standardize, horizon=horizon, stride=stride, device=device)["device"]
    if prefit is not None and not isinstance(prefit, bool):
        raise TypeError(f"prefit must be True, False or None (automatic), got {prefit!r}")
    if optimizer not in ("lbfgs", "adam"):
        close = difflib.get_close_matches(str(optimizer), ["lbfgs", "adam"], n=2)
        raise ValueError(f"optimizer must be 'lbfgs' or 'adam', got {optimizer!r} (close matches: {close})")
    if not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"epochs must be an integer >= 0, got {epochs!r}")
    if on_nan not in ("retry", "stop", "raise"):
        raise ValueError(f"on_nan must be 'retry', 'stop' or 'raise', got {on_nan!r}")
    if not (isinstance(lbfgs_tolerance, (float, int)) and 0 < lbfgs_tolerance < 1):
        raise ValueError(f"lbfgs_tolerance must be a float in (0, 1), got {lbfgs_tolerance!r}")
    if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    strat = _strategies.get(strategy, **(strategy_options or {}))
    trajectories, dt, attrs = as_trajectories(data, dt=dt)
    windows = make_windows(trajectories, horizon=horizon, stride=stride, standardize=standardize, dt=dt)
    scaler: Standardizer = windows.scaler
    dim = windows.dim
    dev = _device(device)

    torch.manual_seed(seed)
    field_config = None
    if field is None:
        field = dict(DEFAULT_FIELD)
    if isinstance(field, dict):
        field_config = dict(field)
        field = build_field(field_config, dim, dtype)
    elif not isinstance(field, torch.nn.Module):
        raise TypeError(f"field must be a torch module, a config dict or None, got {type(field).__name__}")
    field = field.to(device=dev, dtype=dtype)

    continuous = isinstance(strat, _strategies.ContinuousStrategy)
    if prefit is None:
        prefit = continuous
    if optimizer == "lbfgs":
        # the continuous schedule judges convergence by relative progress: no absolute tolerance inside an epoch
        tol_g, tol_c = (0.0, 0.0) if continuous else (lbfgs_tolerance, 1e-2 * lbfgs_tolerance)
        opt = torch.optim.LBFGS(field.parameters(), lr=1.0 if lr is None else lr, max_iter=lbfgs_iterations,
                                tolerance_grad=tol_g, tolerance_change=tol_c, history_size=50,
                                line_search_fn="strong_wolfe")
        sched = None
    else:
        opt = torch.optim.Adam(field.parameters(), lr=1e-3 if lr is None else lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(int(epochs), 1),
                                                           eta_min=(1e-3 if lr is None else lr) * 0.01)

    fingerprint = _fingerprint(field, dim, strat, optimizer, seed, dtype)
    rows: list[dict] = []
    start = 0
    ckpt_path = None
    lock = None
    from .distributed import context as _context

    ddp = _context(dev)  # torchrun: this rank's share of the windows; None in one process
    writer = ddp is None or ddp.is_main
    if checkpoint_dir is not None and not writer:  # other ranks read the checkpoint, rank 0 writes it
        ckpt_path = Path(checkpoint_dir) / CHECKPOINT
        if resume and ckpt_path.exists():
            start, rows = _resume(ckpt_path, fingerprint, field, opt, sched, strat, scaler)
    if checkpoint_dir is not None and writer:
        from systems.files import FolderLock, remove_stale_temps

        ckpt_path = Path(checkpoint_dir) / CHECKPOINT
        lock = FolderLock(ckpt_path.parent).acquire()  # a second fit into this folder refuses
        try:
            remove_stale_temps(ckpt_path.parent)  # left by a killed run
            if resume and ckpt_path.exists():
                start, rows = _resume(ckpt_path, fingerprint, field, opt, sched, strat, scaler)
        except BaseException:
            lock.release()
            raise

    meta = {"system": attrs.get("system", "unknown"), "dt": dt, "strategy": strat.name, "optimizer": optimizer,
            "seed": int(seed), "device": str(dev)}
    if prefit and start == 0:
        from .prefit import prefit as _prefit

        z = scaler.forward(np.asarray(trajectories, dtype=np.float64))
        info = _prefit(field, z, order=prefit_order, device=dev, dtype=dtype)
        meta.update({"prefit_field_error": info["field_error"], "prefit_field_error_lstsq": info["field_error_lstsq"],
                     "prefit_iterations": info["iterations"], "prefit_wall_time": info["wall_time"],
                     "prefit_order": int(prefit_order)})
        if not _finite(field, 0.0):
            raise FloatingPointError("the derivative pre-fit produced non-finite weights; check the data "
                                     "(NaN, blow-up) or pass prefit=False")
    if ddp is not None:
        ddp.broadcast_(field)  # every rank starts from rank 0's weights
    if "params" in attrs:
        meta["params"] = attrs["params"]
    for key in ("lyapunov_time",):
        if key in attrs:
            meta[key] = attrs[key]
    meta.update(provenance or {})

    bar = None
    if progress and epochs > start:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, initial=start, desc=f"fit {strat.name}", unit="epoch")

    current_h = None
    x0 = tg = None
    stop_reason = f"the epoch budget ran out ({epochs} epochs)"
    restarts = 0
    try:
        for epoch in range(start, epochs):
            h = strat.horizon(epoch, rows, horizon)
            if h != current_h:
                w = make_windows(trajectories, horizon=h, stride=strat.stride(h, stride), scaler=scaler, dt=dt)
                x0, tg = w.tensors(dtype=dtype, device=dev)
                n_windows = x0.shape[0]
                if ddp is not None:
                    mine = ddp.share(n_windows).to(x0.device)
                    x0, tg = x0[mine], tg[:, mine]
                current_h = h
            if epoch == 0 and hasattr(strat, "calibrate"):
                meta["initial_misfit"] = strat.calibrate(field, x0, tg, h, reduce=_reducer(ddp, n_windows))
            good = (copy.deepcopy(field.state_dict()), copy.deepcopy(opt.state_dict()))
            t0 = time.perf_counter()
            retries, failed = 0, False
            while True:
                loss, summary = _epoch(field, strat, opt, x0, tg, h, optimizer, batch_size, seed, epoch,
                                       ddp=ddp, n_total=n_windows)
                if _finite(field, loss):
                    break
                field.load_state_dict(good[0])
                opt.load_state_dict(good[1])
                what = f"loss became {loss}" if not math.isfinite(loss) else "weights became non-finite"
                where = f"training {what} at epoch {epoch} ({strat.name}, {optimizer}, horizon {h})"
                if on_nan == "retry" and retries < NAN_RETRIES:
                    retries += 1
                    opt.state.clear()  # L-BFGS history / Adam moments: the next attempt starts afresh
                    warnings.warn(f"{where}; rolled back to the weights at the start of the epoch and retrying "
                                  f"with a fresh optimizer state (retry {retries} of {NAN_RETRIES})",
                                  RuntimeWarning, stacklevel=2)
                    continue
                msg = (f"{where}; the weights were rolled back to those at the start of epoch {epoch} and "
                       "no checkpoint was overwritten. Lower the learning rate, use float64, a shorter "
                       "horizon or a smaller max_substeps.")
                if on_nan == "raise":
                    raise FloatingPointError(msg)
                warnings.warn(msg, RuntimeWarning, stacklevel=2)
                failed = True
                break
            if failed:
                stop_reason = f"non-finite loss or weights at epoch {epoch} after {retries} retries (rolled back)"
                break
            wall = time.perf_counter() - t0
            prev = rows[-1]["loss"] if rows else math.inf
            moved = not (abs(prev - loss) <= STALL * abs(prev))
            restarts = 0 if moved else restarts + 1
            row = {"loss": loss, "misfit": math.sqrt(max(loss, 0.0) / dim), "rtol": strat.tolerance(),
                   "horizon": h, "wall_time": wall, "lr": opt.param_groups[0]["lr"], "retries": retries,
                   "restarts": int(not moved), **summary}
            rows.append(row)
            if not moved:
                opt.state.clear()  # restart L-BFGS (or Adam's moments): its memory may be what stalls it
            if sched is not None:
                sched.step()
            if ckpt_path is not None and writer:
                _save_atomic({
                    "format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, "epoch": epoch + 1,
                    "field": field.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict() if sched is not None else None,
                    "strategy_state": strat.state(), "history": rows, "scaler": scaler.to_dict(),
                    "rng": torch.get_rng_state(),
                }, ckpt_path)
            if bar is not None:
                bar.update(1)
                extra = {"rtol": f"{row['rtol']:.0e}"} if math.isfinite(row["rtol"]) else {}
                bar.set_postfix(loss=f"{loss:.3g}", acc=f"{summary['accepted_fraction']:.2f}",
                                steps=f"{summary['mean_steps']:.2f}", H=h, **extra)
            if callback is not None and callback(epoch, row):
                stop_reason = f"the callback asked to stop after epoch {epoch}"
                break
            reason = strat.finished(rows)
            if reason is None and restarts >= 2:
                reason = (f"stalled: the loss moved by less than {STALL:g} (relative) in two epochs in a row, "
                          "the second after an optimizer restart")
            if reason is not None:
                stop_reason = reason
                break
        else:
            if start >= epochs:
                stop_reason = "nothing to do: the checkpoint already holds every epoch"
    finally:
        if bar is not None:
            bar.close()
        if lock is not None:
            lock.release()

    field.eval()
    meta["epochs"] = len(rows)
    meta["stop_reason"] = stop_reason
    surrogate = Surrogate(field, scaler, dt, strategy=strat, field_config=field_config, provenance=meta)
    meta["world_size"] = 1 if ddp is None else ddp.world
    history = _history_dataset(rows, {k: v for k, v in meta.items() if k != "params"})
    return surrogate, history


def _epoch(field, strat, opt, x0, tg, h, optimizer, batch_size, seed, epoch, *, ddp=None, n_total=None):
    """One epoch; returns (loss float, summary dict). With ``ddp``, x0/tg hold this rank's windows
    (global indices rank, rank + world, ...) of ``n_total``; losses and gradients are summed over ranks."""
    field.train()
    params = [p for p in field.parameters() if p.requires_grad]
    if optimizer == "lbfgs":
        record = {"evals": 0, "summary": None, "loss": float("nan")}

        def closure():
            opt.zero_grad()
            ys, st = strat.rollout(field, x0, h, tg)
            loss = _loss(ys, tg, None if ddp is None else n_total)
            _backward(loss, params)
            s_ = _strategies.summary(st, h)
            if ddp is not None:
                ddp.sum_grads(params)
                total = loss.detach().clone()
                ddp.sum_(total)
                s_ = _merge([(r, w) for r, w in ddp.gather((s_, x0.shape[0]))])
                loss = total
            record["evals"] += s_["n_f_evals"]
            record["summary"] = s_
            record["loss"] = float(loss.detach())
            return loss

        opt.step(closure)
        summary = dict(record["summary"])
        summary["n_f_evals"] = record["evals"]
        return record["loss"], summary
    n = x0.shape[0] if ddp is None else n_total
    bs = n if batch_size is None else min(batch_size, n)
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    perm = torch.randperm(n, generator=gen).to(x0.device)  # the same global order on every rank
    total, parts = 0.0, []
    for i in range(0, n, bs):
        idx = perm[i:i + bs]
        if ddp is not None:  # this rank's windows of the global minibatch, as local positions
            idx = idx[idx % ddp.world == ddp.rank] // ddp.world
        opt.zero_grad()
        if idx.numel():
            ys, st = strat.rollout(field, x0[idx], h, tg[:, idx])
            loss = _loss(ys, tg[:, idx], None if ddp is None else min(bs, n - i))
            _backward(loss, params)
            parts.append((_strategies.summary(st, h), float(idx.numel())))
        else:
            loss = torch.zeros((), dtype=x0.dtype, device=x0.device)
            for p in params:
                p.grad = torch.zeros_like(p)
        if ddp is not None:
            ddp.sum_grads(params)
            loss = loss.detach().clone()
            ddp.sum_(loss)
        opt.step()
        total += float(loss.detach()) * min(bs, n - i)
    if ddp is not None:
        parts = [p for rank_parts in ddp.gather(parts) for p in rank_parts]
    return total / n, _merge(parts)


def _resume(path: Path, fingerprint: dict, field, opt, sched, strat, scaler) -> tuple[int, list]:
    from .io import check_checkpoint_blob, load_torch  # weights_only=True: no code runs from the file

    blob = check_checkpoint_blob(load_torch(path, what="checkpoint"), path, CHECKPOINT_FORMAT)
    theirs = blob["fingerprint"]
    diff = {k: (theirs.get(k), v) for k, v in fingerprint.items() if theirs.get(k) != v}
    if diff:
        detail = "; ".join(f"{k}: checkpoint {a!r} vs this run {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"checkpoint {path} comes from another model ({detail}); "
                         "use another checkpoint_dir or pass resume=False to start over")
    saved = Standardizer.from_dict(blob["scaler"])
    if not (np.allclose(saved.mean, scaler.mean) and np.allclose(saved.std, scaler.std)):
        raise ValueError(f"checkpoint {path} was trained on other data (different standardisation); "
                         "use another checkpoint_dir or pass resume=False")
    field.load_state_dict(blob["field"])
    keep = [{k: g[k] for k in ("max_iter", "tolerance_grad", "tolerance_change") if k in g} for g in opt.param_groups]
    opt.load_state_dict(blob["optimizer"])
    for group, settings in zip(opt.param_groups, keep):  # this call's L-BFGS settings win over the saved ones
        group.update(settings)
    if sched is not None and blob.get("scheduler") is not None:
        sched.load_state_dict(blob["scheduler"])
    strat.load_state(blob.get("strategy_state") or {})
    torch.set_rng_state(blob["rng"])
    return int(blob["epoch"]), list(blob["history"])
