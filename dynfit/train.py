"""``fit``: train a Neural ODE surrogate from trajectories, with a strategy, checkpoints and a
history.

``fit`` runs named steps over one ``_Run`` (the state of a training run):
``_prepare_data`` (trajectories, sampling step, standardisation),
``_build_model``, ``_build_optimizer``, ``_open_checkpoint`` (lock, resume),
``_prefit``, ``_train`` (the epoch loop: ``_watch_data`` (loss floor, validation
free runs), ``_windows``, ``_safe_epoch`` with its rollback, ``_record``,
``_keep_best``, ``_save_checkpoint``, ``_stop_reason``) and ``_finish`` (the
weights kept, the inference solver, the Surrogate and the history Dataset). Its settings are the
objects of :mod:`dynfit.config`.
"""
from __future__ import annotations

import copy
import math
import os
import time
import warnings
from dataclasses import dataclass, field as _field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import strategies as _strategies
from ._history import HISTORY_UNITS, HISTORY_VARS, HistoryRow, history_dataset
from .config import (
    DEFAULT_STRATEGY,
    FIT_GROUPS,
    FitSettings,
    fit_settings,
    load_data,
    settings_from_config,
)
from .data import Standardizer, as_trajectories, make_windows
from .nn.registry import DEFAULT_FIELD, FieldSettings, build_field
from .prefit import resolve_order
from .surrogate import Surrogate

__all__ = ["fit", "train_from_config", "HistoryRow", "HISTORY_VARS", "HISTORY_UNITS"]

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = "dynfit-checkpoint-1"
# Training windows on noisy data start from smoothed states (off: they forecast worse than
# windows from the observed samples; docs/training.md "Noisy data")
_SMOOTH_WINDOW_STARTS = False



def fit(
    data: Any,
    *,
    windows=None,
    model=None,
    optimizer=None,
    loop=None,
    checkpoint=None,
    strategy: Any = DEFAULT_STRATEGY,
    strategy_options: dict | None = None,
    provenance: dict | None = None,
    embed=None,
    **options,
):
    """Train a surrogate; returns (Surrogate, history xarray.Dataset over ``epoch``).

    data: a systems Dataset, an xarray Dataset/DataArray (trajectory, time,
    component) or numpy (T, D) / (N, T, D). strategy: a name from
    ``dynfit.strategies.names()`` (with ``strategy_options``) or a Strategy;
    the default, "continuous", is the best setting we have (docs/training.md).
    provenance: extra attrs for the model and the history. embed: a
    :class:`dynfit.DelayEmbedding` for data that observe fewer variables than
    the system has (the observations and their delayed copies form the state;
    docs/your_data.md); 1-D data without it are refused.

    Settings: the objects ``windows`` (:class:`~dynfit.config.WindowSettings`),
    ``model`` (``ModelSettings``), ``optimizer`` (``OptimizerSettings``, or
    the name "lbfgs" / "adam"), ``loop`` (``LoopSettings``), ``checkpoint``
    (``CheckpointSettings``), and/or any of their fields as keyword arguments,
    which win over the objects': horizon, stride, standardize, dt, batch_size;
    field, dtype, device, seed, prefit, prefit_order, prefit_targets,
    prefit_iterations, shooting, shooting_length, shooting_iterations; optimizer, lr,
    lbfgs_iterations, lbfgs_tolerance, weight_decay, schedule; epochs, on_nan,
    nan_retries, stall, progress, callback, jump_factor, time_limit,
    select_by_forecast; checkpoint_dir, resume. Each field's meaning, default
    and check: dynfit.config.

    field None is DEFAULT_FIELD (a degree-2 polynomial library plus a small
    MLP). prefit None: the derivative pre-fit (:func:`dynfit.prefit.prefit`)
    runs with the continuous strategy on a fresh start. Training stops early
    when the loss is at its floor (roundoff, the training solver's resolution,
    the data's noise), when the strategy says it has converged, when two
    epochs in a row change nothing (the second after an optimizer restart) or
    when ``time_limit`` seconds have passed (checked inside epochs too); the
    history's attrs say why (``stop_reason``). The history's ``loss`` is the
    loss at the weights kept: L-BFGS keeps the weights of its lowest closure
    value in the epoch. An L-BFGS epoch ends early once the largest gradient
    component is below ``lbfgs_tolerance`` or the loss or step changes by
    less than a hundredth of it (the paper's strategies; the continuous one
    judges progress relatively). Checkpoints go to
    ``checkpoint_dir/checkpoint.pt`` after every epoch (atomic, the folder
    locked); with resume=True an existing one is continued (this call's L-BFGS
    settings win). A non-finite loss or weight, a loss above ``jump_factor`` x
    the lowest at its horizon, or validation free runs that blow up roll back
    to the weights at the start of the epoch; on_nan="retry" then clears the
    optimizer's memory and runs the epoch again, up to ``nan_retries`` times
    in a row (the history's ``retries``), before it warns and stops; "stop"
    warns and stops at once; "raise" raises FloatingPointError. With
    ``select_by_forecast`` the weights returned are those whose short free runs
    from a few starts of the data forecast best (the history's attrs
    ``selected_epoch``, -1 for the weights training started from).
    callback(epoch, row) (row: a :class:`HistoryRow`) runs after each epoch's checkpoint; returning
    True stops. The continuous strategy's surrogate integrates at a tolerance set
    from the field's measured accuracy (attrs ``field_error``,
    ``inference_rtol``).
    """
    started = time.perf_counter()
    settings = fit_settings(
        windows=windows,
        model=model,
        optimizer=optimizer,
        loop=loop,
        checkpoint=checkpoint,
        **options,
    )
    strat = _strategies.get(strategy, **(strategy_options or {}))
    run = _Run(settings, strat, *_prepare_data(data, settings, embed))
    run.deadline = started + (
        math.inf if settings.loop.time_limit is None else settings.loop.time_limit
    )
    if settings.loop.progress:  # the library choice and the pre-fit come before the epochs' bar
        import sys

        print("fit: choosing and pre-fitting the field (before the first epoch)", file=sys.stderr,
              flush=True)
    _build_model(run)
    _build_optimizer(run)
    _open_checkpoint(run)
    try:
        _provenance(run)
        _prefit(run)
        _window_starts(run)
        _shoot(run)
        run.meta.update(provenance or {})
        stop_reason = _train(run)
    finally:
        if run.lock is not None:
            run.lock.release()
    return _finish(run, stop_reason)


@dataclass
class _Run:
    """The state of one training run, passed between fit's steps."""
    settings: FitSettings
    strat: Any
    trajectories: np.ndarray  # (N, T, D), physical units
    dt: float
    attrs: dict
    scaler: Standardizer
    field: torch.nn.Module | None = None
    field_config: dict | None = None
    dtype: torch.dtype = torch.float64
    device: torch.device | None = None
    opt: Any = None
    sched: Any = None
    ddp: Any = None  # torchrun: this rank's share of the windows; None in one process
    fingerprint: dict = _field(default_factory=dict)
    meta: dict = _field(default_factory=dict)
    rows: list = _field(default_factory=list)
    start: int = 0
    ckpt_path: Path | None = None
    lock: Any = None
    window_cache: tuple = (None, None, None, 0)  # (horizon, x0, targets, windows over all ranks)
    deadline: float = math.inf  # time.perf_counter() at which the time limit passes
    timed_out: bool = False  # the time limit passed inside the last epoch
    forecasts: Any = None  # dynfit._watch.Forecasts when select_by_forecast
    blown: int = 0  # free runs that blew up at the weights the next epoch starts from
    best: dict | None = None  # {"score", "epoch" (-1: before training), "field"}: the weights kept
    savgol_windows: list | None = None  # (D,) the pre-fit's Savitzky-Golay windows, if smoothed
    starts: np.ndarray | None = None  # (N, T, D) smoothed trajectories windows start from, or None
    order: int = 8  # the pre-fit's difference order (settings.model.prefit_order, "auto" resolved)

    @property
    def dim(self) -> int:
        return self.scaler.dim

    @property
    def writer(self) -> bool:
        return self.ddp is None or self.ddp.is_main


# ------------------------------------------------------------------ the steps
def _prepare_data(data, settings: FitSettings, embed=None):
    """(trajectories (N, T, D), dt, attrs, scaler): checked (delay-embedded with ``embed``), with
    the standardisation of all of them; attrs carry the component names and units."""
    from .data import data_attrs
    from .embedding import check_embed, prepare_state

    w = settings.windows
    embed = check_embed(embed)
    trajectories, dt, attrs = as_trajectories(data, dt=w.dt)
    attrs = {**attrs, **data_attrs(data, trajectories.shape[2])}
    trajectories, attrs = prepare_state(trajectories, dt, attrs, embed, settings.model.field)
    n_time, dim = trajectories.shape[1], trajectories.shape[2]
    if n_time < w.horizon + 1:
        raise ValueError(
            f"trajectories have {n_time} samples but a window of horizon {w.horizon} needs "
            f"{w.horizon + 1}; use a shorter horizon or longer trajectories"
        )
    scaler = Standardizer.fit(trajectories) if w.standardize else Standardizer.identity(dim)
    return trajectories, dt, attrs, scaler


def _resolve_device(device) -> torch.device:
    """None: cuda when available (under torchrun the rank's GPU), else cpu."""
    if device is None:
        if not torch.cuda.is_available():
            return torch.device("cpu")
        local = os.environ.get("LOCAL_RANK")  # torchrun: one GPU per process
        return torch.device(f"cuda:{int(local) % torch.cuda.device_count()}" if local else "cuda")
    return torch.device(device)


def _build_model(run: _Run) -> None:
    """The field (seeded), on its device and dtype; the data-parallel context."""
    m = run.settings.model
    run.dtype, run.device = getattr(torch, m.dtype), _resolve_device(m.device)
    torch.manual_seed(m.seed)
    spec = m.field
    if spec is None:
        spec = dict(DEFAULT_FIELD)
    elif isinstance(spec, FieldSettings):
        spec = spec.config()
    mask, run.selection = None, None
    z = run.scaler.forward(np.asarray(run.trajectories, dtype=np.float64))
    run.order = resolve_order(m.prefit_order, z)
    if isinstance(spec, dict) and spec.get("kind") == "auto":  # the library chosen by the data
        from .selection import auto_field_config

        spec, mask, run.selection = auto_field_config(
            spec, z, scale=run.scaler.std, targets=m.prefit_targets, order=run.order
        )
    if isinstance(spec, dict):
        run.field_config = dict(spec)
        spec = build_field(run.field_config, run.dim, run.dtype)
        if mask is not None:
            spec.mask.copy_(torch.as_tensor(mask, dtype=spec.mask.dtype))
    run.field = spec.to(device=run.device, dtype=run.dtype)


def _build_optimizer(run: _Run) -> None:
    """L-BFGS (strong Wolfe) or Adam with its learning-rate schedule; the checkpoint fingerprint."""
    o, epochs = run.settings.optimizer, run.settings.loop.epochs
    params = run.field.parameters()
    if o.optimizer == "lbfgs":
        tol_g, tol_c = run.strat.lbfgs_tolerances(o.lbfgs_tolerance)
        run.opt = torch.optim.LBFGS(
            params,
            lr=1.0 if o.lr is None else o.lr,
            max_iter=o.lbfgs_iterations,
            tolerance_grad=tol_g,
            tolerance_change=tol_c,
            history_size=50,
            line_search_fn="strong_wolfe",
        )
    else:
        lr = 1e-3 if o.lr is None else o.lr
        run.opt = torch.optim.Adam(params, lr=lr, weight_decay=o.weight_decay)
        if o.schedule == "cosine":
            run.sched = torch.optim.lr_scheduler.CosineAnnealingLR(
                run.opt, T_max=max(int(epochs), 1), eta_min=lr * 0.01
            )
    run.fingerprint = _fingerprint(
        run.field, run.dim, run.strat, o.optimizer, run.settings.model.seed, run.dtype
    )


def _open_checkpoint(run: _Run) -> None:
    """Lock the checkpoint folder (rank 0), remove a killed run's temporary files, resume when
    asked."""
    from .distributed import context

    run.ddp = context(run.device)
    c = run.settings.checkpoint
    if c.checkpoint_dir is None:
        return
    run.ckpt_path = Path(c.checkpoint_dir) / CHECKPOINT
    if run.writer:  # other ranks read the checkpoint, rank 0 writes it
        from systems.files import FolderLock, remove_stale_temps

        # a second fit into this folder refuses
        run.lock = FolderLock(run.ckpt_path.parent).acquire()
    try:
        if run.writer:
            remove_stale_temps(run.ckpt_path.parent)  # left by a killed run
        if c.resume and run.ckpt_path.exists():
            run.start, run.rows, run.best = _resume(
                run.ckpt_path, run.fingerprint, run.field, run.opt, run.sched, run.strat, run.scaler
            )
    except BaseException:
        if run.lock is not None:
            run.lock.release()
        raise


def _provenance(run: _Run) -> None:
    s = run.settings
    run.meta = {
        "system": run.attrs.get("system", "unknown"),
        "dt": run.dt,
        "strategy": run.strat.name,
        "optimizer": s.optimizer.optimizer,
        "seed": int(s.model.seed),
        "device": str(run.device),
    }
    for key in ("params", "lyapunov_time", "components", "state_units", "time_units", "embedding",
                "observed_components", "time_offset"):
        if key in run.attrs:
            run.meta[key] = run.attrs[key]


def _prefit(run: _Run) -> None:
    """The derivative pre-fit on a fresh start (when asked, or with the continuous strategy); then
    every rank starts from rank 0's weights."""
    m = run.settings.model
    selection = getattr(run, "selection", None)
    if selection is not None:  # field kind "auto": what was tried and chosen (plain attrs)
        from .selection import report_json

        run.meta.update(
            {
                "library_selection": report_json(selection),
                "library": selection["chosen"],
                "library_terms": int(run.field.mask.shape[0]),
                "library_active_terms": int((run.field.mask != 0).sum()),
            }
        )
    if (run.strat.prefit_by_default if m.prefit is None else m.prefit) and run.start == 0:
        from .prefit import prefit

        z = run.scaler.forward(np.asarray(run.trajectories, dtype=np.float64))
        windows = selection.get("windows") if selection is not None else None
        info = prefit(
            run.field,
            z,
            order=run.order,
            iterations=m.prefit_iterations,
            device=run.device,
            dtype=run.dtype,
            targets=m.prefit_targets,
            windows=windows,
        )
        run.meta.update(
            {
                "prefit_field_error": info["field_error"],
                "prefit_field_error_lstsq": info["field_error_lstsq"],
                "prefit_iterations": info["iterations"],
                "prefit_wall_time": info["wall_time"],
                "prefit_order": int(run.order),
                "prefit_targets": info["targets"],
            }
        )
        if "coarse_sampling" in info:  # clean data too coarse for differences: weak targets
            run.meta["prefit_coarse_sampling"] = float(info["coarse_sampling"])
        if "noise_level" in info:  # standardised units: a fraction of each component's std
            run.meta.update(
                {
                    "noise_estimate": float(max(info["noise_level"])),
                    "noise_estimate_components": ", ".join(f"{v:.3g}" for v in info["noise_level"]),
                }
            )
        if "prefit_validation" in info:  # noisy targets: was the neural part worth keeping?
            run.meta["prefit_neural_kept"] = int(
                info["prefit_validation"] < info["prefit_validation_start"])
        if "windows" in info:
            run.meta["prefit_savgol_windows"] = ", ".join(str(w) for w in info["windows"])
        if "weak_width" in info:  # samples per test function of the weak-form targets
            run.meta["prefit_weak_width"] = int(info["weak_width"])
            run.savgol_windows = info["windows"]
        if not _finite(run.field, 0.0):
            raise FloatingPointError(
                "the derivative pre-fit produced non-finite weights; check the data "
                "(NaN, blow-up) or pass prefit=False"
            )
    if run.ddp is not None:
        run.ddp.broadcast_(run.field)


def _window_starts(run: _Run) -> None:
    """Record whether the data are judged noisy (the pre-fit's decision: its targets were
    "smoothed"; without a pre-fit, ``prefit_targets`` "smoothed", or "auto" and
    :func:`dynfit.smoothing.noise_is_white` finds noise) as ``noisy_data``, and where the training
    windows start (``window_starts``). With ``_SMOOTH_WINDOW_STARTS`` on noisy data,
    ``run.starts`` (N, T, D) holds the Savitzky-Golay smoothed trajectories (physical units, the
    pre-fit's windows) to start from; off (the default: it forecasts worse, docs/training.md
    "Noisy data"), the windows start from the observed samples."""
    m = run.settings.model
    z = None
    if "prefit_targets" in run.meta:
        noisy = (run.meta["prefit_targets"] in ("smoothed", "weak")
                 and "prefit_coarse_sampling" not in run.meta)
    elif m.prefit_targets == "differences":
        noisy = False
    else:
        from .smoothing import DIFFERENCE_ORDERS, noise_is_white

        z = run.scaler.forward(np.asarray(run.trajectories, dtype=np.float64))
        # trajectories too short for a noise estimate are taken as observed (nothing to smooth with)
        too_short = z.shape[1] <= max(DIFFERENCE_ORDERS)
        noisy = m.prefit_targets in ("smoothed", "weak") or (
            not too_short and bool(noise_is_white(z).any())
        )
    run.meta["noisy_data"] = int(noisy)
    if noisy and _SMOOTH_WINDOW_STARTS:
        from .smoothing import noise_level, savgol_window, smoothed_states

        windows = (getattr(run, "selection", None) or {}).get("windows") or run.savgol_windows
        if windows is None:
            if z is None:
                z = run.scaler.forward(np.asarray(run.trajectories, dtype=np.float64))
            windows = savgol_window(z, noise_level(z))
        run.starts = smoothed_states(run.trajectories, windows)
        run.meta["window_savgol_windows"] = ", ".join(str(int(w)) for w in windows)
    run.meta["window_starts"] = "observed" if run.starts is None else "smoothed"


def _shoot(run: _Run) -> None:
    """Multiple shooting (:func:`dynfit.shooting.shoot`) after the pre-fit on a fresh start: with
    ``shooting`` None on noisy data that were pre-fitted, with True always. The library's
    coefficients alone are fitted when the pre-fit kept no neural part (it would fit the noise),
    every weight otherwise. Segment states start from the Savitzky-Golay smoothed data."""
    m = run.settings.model
    use = m.shooting
    if use is None:
        use = bool(run.meta.get("noisy_data")) and "prefit_targets" in run.meta
    if not use or run.start > 0:
        return
    from .shooting import shoot
    from .smoothing import noise_level, savgol_window, smoothed_states

    z = run.scaler.forward(np.asarray(run.trajectories, dtype=np.float64))
    if run.starts is not None:
        states = run.scaler.forward(np.asarray(run.starts, dtype=np.float64))
    else:
        windows = (getattr(run, "selection", None) or {}).get("windows") or run.savgol_windows
        states = smoothed_states(z, savgol_window(z, noise_level(z)) if windows is None
                                 else windows)
    library = hasattr(run.field, "coef") and hasattr(run.field, "features")
    neural = any(p.requires_grad for name, p in run.field.named_parameters() if name != "coef")
    only_library = library and (not neural or not run.meta.get("prefit_neural_kept", 1))
    # the solver's error a thousandth of the noise (at most 1e-5, at least what the dtype resolves)
    noise = run.meta.get("noise_estimate", 0.0)
    rtol = min(max(1e-3 * noise, 1e-8 if run.dtype == torch.float64 else 1e-5), 1e-5)
    info = shoot(run.field, z, states, length=min(m.shooting_length, z.shape[1] - 1),
                 iterations=m.shooting_iterations, rtol=rtol,
                 parameters="library" if only_library else "all",
                 deadline=run.deadline, device=run.device, dtype=run.dtype)
    run.meta.update({**info, "shooting_rtol": rtol})
    if not _finite(run.field, 0.0):
        raise FloatingPointError("multiple shooting produced non-finite weights; pass "
                                 "shooting=False")
    if run.ddp is not None:
        run.ddp.broadcast_(run.field)


def _windows(run: _Run, h: int):
    """(x0, targets, windows over all ranks) for horizon ``h``: made again only when h changes. The
    start states come from ``run.starts`` when set (smoothed), the targets from the observations."""
    if run.window_cache[0] != h:
        stride = run.strat.stride(h, run.settings.windows.stride)
        w = make_windows(run.trajectories, horizon=h, stride=stride, scaler=run.scaler, dt=run.dt)
        x0, tg = w.tensors(dtype=run.dtype, device=run.device)
        if run.starts is not None:
            x0 = make_windows(run.starts, horizon=h, stride=stride, scaler=run.scaler,
                              dt=run.dt).tensors(dtype=run.dtype, device=run.device)[0]
        n_windows = x0.shape[0]
        if run.ddp is not None:
            mine = run.ddp.share(n_windows).to(x0.device)
            x0, tg = x0[mine], tg[:, mine]
        run.window_cache = (h, x0, tg, n_windows)
    return run.window_cache[1:]


def _train(run: _Run) -> str:
    """The epoch loop; returns why it stopped."""
    epochs = run.settings.loop.epochs
    if run.start >= epochs:
        return "nothing to do: the checkpoint already holds every epoch"
    _watch_data(run)
    bar = _progress_bar(run)
    restarts = 0
    try:
        for epoch in range(run.start, epochs):
            if time.perf_counter() >= run.deadline:
                return _time_reason(run, epoch)
            h = run.strat.horizon(epoch, run.rows, run.settings.windows.horizon)
            x0, tg, n_windows = _windows(run, h)
            if epoch == 0:
                misfit = run.strat.calibrate(run.field, x0, tg, h,
                                             reduce=_reducer(run.ddp, n_windows))
                if misfit is not None:
                    run.meta["initial_misfit"] = misfit
                    reason = _floor_before_training(run, misfit, h)
                    if reason is not None:
                        return reason
            t0 = time.perf_counter()
            loss, summary, retries, score = _safe_epoch(run, epoch, x0, tg, h, n_windows)
            if loss is None:
                if run.timed_out:
                    return _time_reason(run, epoch) + f" ({summary}; rolled back)"
                return f"{summary} at epoch {epoch} after {retries} retries (rolled back)"
            row = _record(run, loss, summary, h, time.perf_counter() - t0, retries, score)
            _keep_best(run, epoch, score)
            restarts = 0 if not row.restarts else restarts + 1
            if run.ckpt_path is not None and run.writer:
                _save_checkpoint(run, epoch)
            if bar is not None:
                _show(bar, row)
            reason = (
                _time_reason(run, epoch + 1)
                if run.timed_out
                else _stop_reason(run, epoch, row, restarts)
            )
            if reason is not None:
                return reason
    finally:
        if bar is not None:
            bar.close()
    return f"the epoch budget ran out ({epochs} epochs)"


def _watch_data(run: _Run) -> None:
    """Before the first epoch: the data's loss floor for the strategy, the validation free runs and
    the score of the weights training starts from (the pre-fit's)."""
    from ._watch import Forecasts, loss_floor

    z = run.scaler.forward(np.asarray(run.trajectories, dtype=np.float64))
    floor = loss_floor(z, run.dtype)
    run.strat.set_floor(floor)
    run.meta.update({"loss_floor_roundoff": floor.roundoff, "loss_floor_noise": floor.noise})
    if not run.settings.loop.select_by_forecast:
        return
    run.forecasts = Forecasts(z, device=run.device, dtype=run.dtype)
    if run.best is None:  # a fresh start (a resumed run has its best from the checkpoint)
        _keep_best(run, run.start - 1, run.forecasts.score(run.field, run.strat))
    run.blown = run.best["score"].blown if run.best is not None else 0


def _floor_before_training(run: _Run, misfit: float, horizon: int) -> str | None:
    """Why not to train at all: the starting field's loss (``misfit``: the RMS error per component
    of its rollouts of ``horizon`` samples at the tightest tolerance) already at its floor. On
    clean data, below what the training solver resolves (epochs could not measure the field, only
    move it); on noisy data, at the noise floor (epochs would only fit the noise). None
    otherwise."""
    if not math.isfinite(misfit):
        return None
    reason = run.strat.resolved(misfit, horizon)
    if reason is not None:
        return (f"{reason}, before the first epoch: the pre-fit's field is kept as it is (no "
                "epoch run)")
    floor = run.strat.floor
    if floor is None or floor.noise <= 0:
        return None
    reason = floor.noise_reason(misfit ** 2 * run.dim)
    if reason is None:
        return None
    return (f"{reason}, before the first epoch: the pre-fit's field already fits the data to "
            "their noise, and training would fit the noise (no epoch run)")


def _keep_best(run: _Run, epoch: int, score) -> None:
    """Keep the weights that forecast best so far (score None: selection is off)."""
    if score is None:
        return
    run.blown = score.blown
    if score.better_than(None if run.best is None else run.best["score"]):
        run.best = {"score": score, "epoch": epoch, "field": copy.deepcopy(run.field.state_dict())}


def _time_reason(run: _Run, epochs_done: int) -> str:
    return (
        f"time limit: {run.settings.loop.time_limit:g} s of wall time passed after {epochs_done} "
        f"epoch(s){' (the last one cut short)' if run.timed_out else ''}"
    )


def _progress_bar(run: _Run):
    if not run.settings.loop.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=run.settings.loop.epochs,
        initial=run.start,
        desc=f"fit {run.strat.name}",
        unit="epoch",
    )


def _show(bar, row: HistoryRow) -> None:
    bar.update(1)
    extra = {"rtol": f"{row.rtol:.0e}"} if math.isfinite(row.rtol) else {}
    bar.set_postfix(loss=f"{row.loss:.3g}", acc=f"{row.accepted_fraction:.2f}",
                    steps=f"{row.mean_steps:.2f}", H=row.horizon, **extra)


def _safe_epoch(run: _Run, epoch: int, x0, tg, h: int, n_windows: int):
    """One epoch with the rollback: (loss at the weights kept, summary, retries, forecast Score or
    None), or (None, what went wrong, retries, None) to stop.

    Rolled back like a non-finite loss: a loss above ``jump_factor`` x the lowest recorded at this
    horizon, and free runs that blow up from more validation starts than before the epoch.
    """
    loop, o = run.settings.loop, run.settings.optimizer
    good = (copy.deepcopy(run.field.state_dict()), copy.deepcopy(run.opt.state_dict()))
    retries = 0
    while True:
        loss, summary, run.timed_out = _epoch(
            run.field,
            run.strat,
            run.opt,
            x0,
            tg,
            h,
            o.optimizer,
            run.settings.windows.batch_size,
            run.settings.model.seed,
            epoch,
            ddp=run.ddp,
            n_total=n_windows,
            deadline=run.deadline,
        )
        what, score = _judge(run, loss, h), None
        if what is None and run.forecasts is not None:
            score = run.forecasts.score(run.field, run.strat)
            if score.blown > run.blown:
                what = (
                    f"free runs blew up from {score.blown} of {len(run.forecasts.truth[0])} "
                    f"validation starts (against {run.blown} before the epoch)"
                )
        if what is None:
            return loss, summary, retries, score
        run.field.load_state_dict(good[0])
        run.opt.load_state_dict(good[1])
        run.strat.rolled_back()
        where = f"training {what} at epoch {epoch} ({run.strat.name}, {o.optimizer}, horizon {h})"
        if loop.on_nan == "retry" and retries < loop.nan_retries and not run.timed_out:
            retries += 1
            run.opt.state.clear()  # L-BFGS history / Adam moments: the next attempt starts afresh
            warnings.warn(
                f"{where}; rolled back to the weights at the start of the epoch and retrying "
                f"with a fresh optimizer state (retry {retries} of {loop.nan_retries})",
                RuntimeWarning,
                stacklevel=4,
            )
            continue
        msg = (f"{where}; the weights were rolled back to those at the start of epoch {epoch} and "
               "no checkpoint was overwritten. Lower the learning rate, use float64, a shorter "
               "horizon or a smaller max_substeps.")
        if loop.on_nan == "raise":
            raise FloatingPointError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=4)
        return None, what, retries, None


def _judge(run: _Run, loss: float, h: int) -> str | None:
    """What is wrong with an epoch that ended at ``loss`` (non-finite, a jump), or None."""
    if not _finite(run.field, loss):
        return (
            f"loss became {loss} (non-finite)"
            if not math.isfinite(loss)
            else "weights became non-finite"
        )
    same = [r.loss for r in run.rows if r.horizon == h and math.isfinite(r.loss)]
    factor = run.settings.loop.jump_factor
    if same and loss > factor * min(same):
        return (
            f"loss jumped to {loss:.3g}, more than {factor:g}x the lowest at horizon {h} "
            f"({min(same):.3g}; jump_factor)"
        )
    return None


def _record(run: _Run, loss: float, summary: dict, h: int, wall: float, retries: int,
            score=None) -> HistoryRow:
    """The epoch's history row; an epoch that moved nothing restarts the optimizer's memory.
    summary: the solver's scalars (:func:`dynfit.strategies.summary`) and ``loss_start``."""
    prev = run.rows[-1].loss if run.rows else math.inf
    moved = not (abs(prev - loss) <= run.settings.loop.stall * abs(prev))
    row = HistoryRow(loss=loss, misfit=math.sqrt(max(loss, 0.0) / run.dim),
                     rtol=run.strat.tolerance(), horizon=h, wall_time=wall,
                     lr=run.opt.param_groups[0]["lr"], retries=retries, restarts=int(not moved),
                     forecast=math.nan if score is None else score.valid, **summary)
    run.rows.append(row)
    if not moved:
        # restart L-BFGS (or Adam's moments): its memory may be what stalls it
        run.opt.state.clear()
    if run.sched is not None:
        run.sched.step()
    return row


def _save_checkpoint(run: _Run, epoch: int) -> None:
    best = (
        None
        if run.best is None
        else {
            "score": run.best["score"].to_dict(),
            "epoch": run.best["epoch"],
            "field": run.best["field"],
        }
    )
    _save_atomic(
        {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": run.fingerprint,
            "epoch": epoch + 1,
            "field": run.field.state_dict(),
            "optimizer": run.opt.state_dict(),
            "scheduler": run.sched.state_dict() if run.sched is not None else None,
            "strategy_state": run.strat.state(),
            "history": [r.to_dict() for r in run.rows],
            "scaler": run.scaler.to_dict(),
            "rng": torch.get_rng_state(),
            "best": best,
        },
        run.ckpt_path,
    )


def _stop_reason(run: _Run, epoch: int, row: HistoryRow, restarts: int) -> str | None:
    """Why to stop after this epoch (the callback, the strategy: a loss at its floor or converged, a
    stall), or None."""
    loop = run.settings.loop
    if loop.callback is not None and loop.callback(epoch, row):
        return f"the callback asked to stop after epoch {epoch}"
    reason = run.strat.finished(run.rows)
    if reason is None and restarts >= 2:
        reason = (
            f"stalled: the loss moved by less than {loop.stall:g} (relative) in two epochs in a "
            "row, the second after an optimizer restart"
        )
    return reason


def _finish(run: _Run, stop_reason: str):
    """(Surrogate, history Dataset) with the provenance: the weights that forecast best, the
    inference solver set from the field's accuracy (strategies whose
    ``inference_follows_field``)."""
    meta = run.meta
    if run.best is not None:
        run.field.load_state_dict(run.best["field"])
        meta.update(
            {
                "selected_epoch": int(run.best["epoch"]),
                "selected_forecast": run.best["score"].valid,
                "selected_blown": run.best["score"].blown,
            }
        )
    run.field.eval()
    meta["epochs"] = len(run.rows)
    meta["stop_reason"] = stop_reason
    solver = None
    if run.strat.inference_follows_field:
        from ._watch import field_error

        z = run.scaler.forward(np.asarray(run.trajectories, dtype=np.float64))
        err = field_error(run.field, z, order=run.order, device=run.device, dtype=run.dtype)
        solver = run.strat.inference(err)
        meta.update({"field_error": err, "inference_rtol": solver.rtol})
    surrogate = Surrogate(run.field, run.scaler, run.dt, solver=solver, strategy=run.strat,
                          field_config=run.field_config, provenance=meta)
    meta["world_size"] = 1 if run.ddp is None else run.ddp.world
    history = history_dataset(run.rows, {k: v for k, v in meta.items() if k != "params"})
    return surrogate, history


# ---------------------------------------------------------------- from a TOML config (dynfit train)
def _split(data, fraction: float):
    """(train, held-out): by trajectory, or along time for a single trajectory."""
    from .data import as_trajectories, split

    try:
        n_traj = as_trajectories(data)[0].shape[0] if not hasattr(data, "sizes") else (
            data.sizes.get("trajectory", 1))
    except ValueError:
        n_traj = 1
    if n_traj >= 2 and 0 < round(fraction * n_traj) < n_traj:
        return split(data, by="trajectory", fraction=fraction)
    return split(data, by="time", fraction=fraction)


def train_from_config(cfg: dict, *, out=None, progress: bool = True):
    """Train as configured; writes model.pt, history.nc and checkpoints/ to the output folder.

    The output folder is locked while it runs (a second run into it refuses),
    and every file is written atomically. Returns (Surrogate, history, held-out data).
    """
    import contextlib
    import sys

    from systems.files import FolderLock

    from .distributed import context
    from .io import write_netcdf

    s = settings_from_config(cfg, out=out, progress=progress)
    folder = Path(s["output"].dir)
    ddp = context(s["model"].device)  # under torchrun: rank 0 alone locks the folder and writes
    writer = ddp is None or ddp.is_main
    with FolderLock(folder) if writer else contextlib.nullcontext():
        if progress and not s["data"].path:  # a simulation takes a while: say so at once
            d = s["data"]
            print(f"dynfit train: simulating {d.n_traj} trajectories of {d.system}",
                  file=sys.stderr, flush=True)
        train, held = _split(load_data(s["data"]), s["data"].split_fraction)
        sur, hist = fit(train, strategy=s["strategy"], strategy_options=s["options"],
                        **{k: s[k] for k in FIT_GROUPS})
        if writer:
            sur.save(folder / "model.pt")
            write_netcdf(hist, folder / "history.nc")
    return sur, hist, held


# ------------------------------------------------------------------ helpers
def _reducer(ddp, n_total: int):
    """(sum of squares, count) over this rank's windows -> over all ranks; identity in one
    process."""
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
    out = {
        k: sum(w * s_[k] for s_, w in summaries) / tot
        for k in ("accepted_fraction", "mean_substeps", "mean_steps")
    }
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


class _OutOfTime(Exception):
    """The time limit passed inside an epoch (raised in the L-BFGS closure)."""


def _late(deadline: float, ddp) -> bool:
    """The time limit has passed (on any rank, under torchrun)."""
    if deadline == math.inf:
        return False
    late = time.perf_counter() >= deadline
    if ddp is not None:
        flag = torch.tensor([float(late)], dtype=torch.float64)
        ddp.sum_(flag)
        late = bool(flag[0] > 0)
    return late


def _evaluate(field, strat, x0, tg, h, bs, *, ddp=None, n_total=None) -> tuple[float, dict]:
    """(loss, summary) at the current weights, no gradient, in batches of ``bs`` windows."""
    n = x0.shape[0]
    total, parts = 0.0, []
    with torch.no_grad():
        for i in range(0, n, bs):
            ys, st = strat.rollout(field, x0[i:i + bs], h, tg[:, i:i + bs])
            total += float((ys - tg[:ys.shape[0], i:i + bs]).pow(2).sum(dim=-1).sum()) / ys.shape[0]
            parts.append((_strategies.summary(st, h), float(ys.shape[1])))
    if ddp is not None:
        t = torch.tensor([total], dtype=torch.float64)
        ddp.sum_(t)
        total = float(t[0])
        parts = [p for rank_parts in ddp.gather(parts) for p in rank_parts]
    return total / max(n if ddp is None else n_total, 1), _merge(parts)


def _epoch(field, strat, opt, x0, tg, h, optimizer, batch_size, seed, epoch, *, ddp=None,
           n_total=None, deadline=math.inf):
    """One epoch: (loss at the weights kept, summary dict, timed out). With ``ddp``, x0 (B, D)
    and tg (H, B, D) hold this rank's windows (global indices rank, rank + world, ...) of
    ``n_total``; losses and gradients are summed over ranks. Past ``deadline``
    (time.perf_counter()) the epoch stops. L-BFGS runs a full-batch epoch, Adam a minibatch one.
    """
    field.train()
    params = [p for p in field.parameters() if p.requires_grad]
    if optimizer == "lbfgs":
        return _full_batch_epoch(field, strat, opt, params, x0, tg, h, ddp=ddp, n_total=n_total,
                                 deadline=deadline)
    return _minibatch_epoch(field, strat, opt, params, x0, tg, h, batch_size, seed, epoch, ddp=ddp,
                            n_total=n_total, deadline=deadline)


def _full_batch_epoch(field, strat, opt, params, x0, tg, h, *, ddp, n_total, deadline):
    """One L-BFGS step over every window. It keeps the weights of its lowest closure value (the
    line search's trials included), so the loss recorded is the loss at the weights kept, at no
    extra cost; ``loss_start`` is its first closure value (the epoch's starting weights). The
    time limit is checked inside the closure."""
    record = {"evals": 0, "summary": None, "loss": math.inf, "start": math.nan, "weights": None}

    def closure():
        if _late(deadline, ddp):
            raise _OutOfTime
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
        value = float(loss.detach())
        if math.isnan(record["start"]):
            record["start"] = value
        if value < record["loss"]:  # the lowest so far: its weights are the ones to keep
            record.update(loss=value, summary=s_, weights=[p.detach().clone() for p in params])
        elif record["summary"] is None:
            record["summary"] = s_
        return loss

    timed_out = False
    try:
        opt.step(closure)
    except _OutOfTime:
        timed_out = True
        opt.state.clear()  # a step cut short leaves L-BFGS's memory half updated
    except IndexError:
        # torch's strong-Wolfe search indexes past its one-point bracket when a trial loss is NaN
        # (torch 2.x, lbfgs.py _strong_wolfe): the step ends here, the lowest loss's weights are
        # kept below, and L-BFGS's memory starts afresh
        opt.state.clear()
    if record["weights"] is not None and not all(
        torch.equal(p, w) for p, w in zip(params, record["weights"])
    ):
        with torch.no_grad():
            for p, w in zip(params, record["weights"]):
                p.copy_(w)
        opt.state.clear()  # its memory describes the last trial's weights, not these
    if record["summary"] is None:  # cut short before the first closure: evaluate where we stand
        loss, summary = _evaluate(
            field, strat, x0, tg, h, max(x0.shape[0], 1), ddp=ddp, n_total=n_total
        )
        return loss, {**summary, "loss_start": loss}, timed_out
    summary = dict(record["summary"])
    summary["n_f_evals"] = record["evals"]
    summary["loss_start"] = record["start"]
    loss = record["loss"] if record["weights"] is not None else math.nan
    return loss, summary, timed_out


def _minibatch_epoch(field, strat, opt, params, x0, tg, h, batch_size, seed, epoch, *, ddp, n_total,
                     deadline):
    """Adam over minibatches of ``batch_size`` windows in a seeded order (the same global order on
    every rank); the loss is evaluated once more at the end without gradient (one forward pass
    over the windows). The time limit is checked between minibatches."""
    n = x0.shape[0] if ddp is None else n_total
    bs = n if batch_size is None else min(batch_size, n)
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    perm = torch.randperm(n, generator=gen).to(x0.device)  # the same global order on every rank
    evals, timed_out = 0, False
    for i in range(0, n, bs):
        if _late(deadline, ddp):
            timed_out = True
            break
        idx = perm[i:i + bs]
        if ddp is not None:  # this rank's windows of the global minibatch, as local positions
            idx = idx[idx % ddp.world == ddp.rank] // ddp.world
        opt.zero_grad()
        if idx.numel():
            ys, st = strat.rollout(field, x0[idx], h, tg[:, idx])
            loss = _loss(ys, tg[:, idx], None if ddp is None else min(bs, n - i))
            _backward(loss, params)
            evals += _strategies.summary(st, h)["n_f_evals"]
        else:
            for p in params:
                p.grad = torch.zeros_like(p)
        if ddp is not None:
            ddp.sum_grads(params)
        opt.step()
    loss, summary = _evaluate(
        field,
        strat,
        x0,
        tg,
        h,
        max(bs if ddp is None else x0.shape[0], 1),
        ddp=ddp,
        n_total=n_total,
    )
    if ddp is not None:
        t = torch.tensor([float(evals)], dtype=torch.float64)
        ddp.sum_(t)
        evals = int(t[0])
    summary["n_f_evals"] += evals
    summary["loss_start"] = math.nan
    return loss, summary, timed_out


def _resume(
    path: Path, fingerprint: dict, field, opt, sched, strat, scaler
) -> tuple[int, list, dict | None]:
    """Load a checkpoint into the run's objects: (epochs done, history rows, the best weights or
    None)."""
    # weights_only=True: no code runs from the file
    from .io import check_checkpoint_blob, load_torch

    blob = check_checkpoint_blob(load_torch(path, what="checkpoint"), path, CHECKPOINT_FORMAT)
    theirs = blob["fingerprint"]
    diff = {k: (theirs.get(k), v) for k, v in fingerprint.items() if theirs.get(k) != v}
    if diff:
        detail = "; ".join(f"{k}: checkpoint {a!r} vs this run {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"checkpoint {path} comes from another model ({detail}); "
                         "use another checkpoint_dir or pass resume=False to start over")
    saved = Standardizer.from_dict(blob["scaler"])
    if not (np.allclose(saved.mean, scaler.mean) and np.allclose(saved.std, scaler.std)):
        raise ValueError(
            f"checkpoint {path} was trained on other data (different standardisation); "
            "use another checkpoint_dir or pass resume=False"
        )
    field.load_state_dict(blob["field"])
    keep = [
        {k: g[k] for k in ("max_iter", "tolerance_grad", "tolerance_change") if k in g}
        for g in opt.param_groups
    ]
    try:
        opt.load_state_dict(blob["optimizer"])
    # another parameter layout, e.g. a TA-BN field saved before its
    except (ValueError, KeyError) as err:
        # layers shared one set of tables (dynfit 2026-12): the weights load, the optimizer's
        # moments do not
        raise ValueError(
            f"checkpoint {path} holds optimizer state for another parameter layout ({err}); it was "
            "written by another dynfit version or model; pass resume=False to start over"
        ) from err
    # this call's L-BFGS settings win over the saved ones
    for group, settings in zip(opt.param_groups, keep):
        group.update(settings)
    if sched is not None and blob.get("scheduler") is not None:
        sched.load_state_dict(blob["scheduler"])
    strat.load_state(blob.get("strategy_state") or {})
    torch.set_rng_state(blob["rng"])
    from ._watch import Score

    best = blob.get("best")
    if best:
        best = {
            "score": Score.from_dict(best["score"]),
            "epoch": int(best["epoch"]),
            "field": best["field"],
        }
    rows = [HistoryRow.from_dict(r) for r in blob["history"]]
    return int(blob["epoch"]), rows, best or None
