"""Fuzz the public entry points with bad inputs and faults; classify every outcome.

    python tests/fuzz_run.py                 # every case (a few minutes)
    python tests/fuzz_run.py --sample 40     # a seeded sample
    python tests/fuzz_run.py --entry fit     # one entry point

Each case is a bad input (or a fault such as a full disk) given to one entry
point, in its own empty folder, in a worker process. Outcomes:

- clear: a documented exception (ValueError, TypeError, OSError, MemoryError,
  FolderLockedError, SolverError, FloatingPointError) raised by dynfit or
  systems code (not passed through from a library) with a message of one
  line; for the command line: exit code 2 and one line on stderr.
- unclear: any other exception, a library's own error, a traceback, a
  multi-line message.
- hang: no answer within the time limit (the worker is killed and restarted).
- silent-wrong: the call returned as if the input were fine.
- partial-file: the call failed but left a temporary file, an empty file or
  a half-written .nc/.pt file behind.

Prints the counts by entry point and every case that is not clear; exits 1
if any is not clear.
"""

from __future__ import annotations

import argparse
import collections
import errno
import io
import multiprocessing as mp
import os
import random
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OUTCOMES = ("clear", "unclear", "hang", "silent-wrong", "partial-file")
TIMEOUT_S = 90.0


# ---------------------------------------------------- shared fixtures (built once per worker)
_FIX: dict = {}


def fixtures(root: Path) -> dict:
    """Small files and objects the cases use: data, a model, netCDF files; built once."""
    if _FIX:
        return _FIX
    import numpy as np
    import torch
    import xarray as xr

    import systems
    from dynfit.data import Standardizer
    from dynfit.surrogate import Surrogate, build_field

    torch.set_num_threads(1)
    root.mkdir(parents=True, exist_ok=True)
    data = systems.simulate("lorenz63", n_traj=3, n_steps=120, dt=0.01, seed=1, transient=2.0)
    test = systems.simulate("lorenz63", n_traj=2, n_steps=200, dt=0.01, seed=2, transient=2.0)
    cfg = {"kind": "mlp", "width": 8, "depth": 2}
    torch.manual_seed(0)
    sur = Surrogate(
        build_field(cfg, 3),
        Standardizer(np.zeros(3), np.ones(3) * 8.0),
        0.01,
        field_config=cfg,
        provenance={"system": "lorenz63"},
    )
    model = sur.save(root / "model.pt")
    test_nc = systems.save(test, root / "test.nc")
    other_nc = root / "other.nc"
    xr.Dataset({"y": ("t", np.arange(5.0))}).to_netcdf(other_nc)
    _FIX.update(
        data=data,
        test=test,
        surrogate=sur,
        model=model,
        test_nc=test_nc,
        other_nc=other_nc,
        model_bytes=model.read_bytes(),
        nc_bytes=test_nc.read_bytes(),
        root=root,
    )
    return _FIX


# ------------------------------------------------------------------ the cases
class Case:
    def __init__(self, entry: str, name: str, fn, *, cli: bool = False, may_succeed=None):
        self.entry, self.name, self.fn, self.cli, self.may_succeed = (
            entry,
            name,
            fn,
            cli,
            may_succeed,
        )


def _cases() -> list[Case]:
    import numpy as np

    cases: list[Case] = []

    def add(entry, name, fn, **kw):
        cases.append(Case(entry, name, fn, **kw))

    nan, inf = float("nan"), float("inf")
    bad_ints = [0, -1, 2.5, "3", None, True, nan, [2], 10**13]
    bad_pos = [0.0, -0.01, nan, inf, "0.01", None, True, [0.01]]
    bad_nonneg = [-1.0, nan, inf, "1", [1.0]]

    # ---------------- systems.simulate
    def sim(**kw):
        def run(d):
            import systems

            base = dict(n_traj=2, n_steps=20, dt=0.01, seed=0)
            base.update(kw)
            return systems.simulate(base.pop("system", "lorenz63"), **base)

        return run

    for key, values in {
        "n_traj": bad_ints,
        "n_steps": bad_ints,
        "dt": bad_pos,
        "rtol": bad_pos,
        "atol": bad_pos,
        "transient": bad_nonneg,
        "noise": bad_nonneg,
        "seed": [-1, 2.5, "x", nan],
        "substeps": [0, -2, 1.5, "2"],
        "max_steps": [0, -1, 1.5, "10"],
        "chunks": [0, -1, 1.5, "2", True],
    }.items():
        for v in values:
            add("simulate", f"{key}={v!r}", sim(**{key: v}))
    for v in ["nope", "", None, 3, "Lorenz63 "]:
        add("simulate", f"system={v!r}", sim(system=v))
    for v in ["euler", "", None, "RK4", 4]:
        add("simulate", f"method={v!r}", sim(method=v))
    for v in [[1, 2], [[1, 2, 3]] * 3, [nan, 1, 1], "abc", [[1, 2, 3], [inf, 0, 0]], {"x": 1}]:
        add("simulate", f"x0={v!r}", sim(x0=v))
    for v in [{"sigma": "ten"}, {"nope": 1.0}, [1, 2], {"sigma": nan}, "sigma=10"]:
        add("simulate", f"params={v!r}", sim(params=v))
    add("simulate", "n_traj=1e9 with x0", sim(n_traj=10**9, n_steps=100, x0=[1.0, 1.0, 1.0]))
    add("simulate", "n_steps=1e12", sim(n_steps=10**12))
    add("simulate", "rk4 with huge dt blows up", sim(method="rk4", dt=5.0, n_steps=50))
    add("simulate", "adaptive step limit", sim(max_steps=1, n_steps=20, dt=1.0))

    # ---------------- systems.save / load
    def save(ds_fn, name="x.nc"):
        def run(d):
            import systems

            return systems.save(ds_fn(), d / name)

        return run

    def load(make):
        def run(d):
            import systems

            return systems.load(make(d))

        return run

    add("systems.save", "not a Dataset", save(lambda: np.zeros(3)))
    add("systems.save", "None", save(lambda: None))
    add(
        "systems.save",
        "path under a file",
        lambda d: (
            d.joinpath("f").write_text("x"),
            __import__("systems").save(fixtures(d)["data"], d / "f" / "x.nc"),
        ),
    )
    add(
        "systems.save",
        "path is a folder",
        lambda d: (
            d.joinpath("dir.nc").mkdir(),
            __import__("systems").save(fixtures(d)["data"], d / "dir.nc"),
        ),
    )
    add(
        "systems.save",
        "full disk",
        lambda d: _full_disk(
            lambda: __import__("systems").save(fixtures(d)["data"], d / "x.nc"), netcdf=True
        ),
    )

    def bad_file(content):
        def make(d):
            p = d / "bad.nc"
            p.write_bytes(content(d) if callable(content) else content)
            return p

        return make

    for name, content in {
        "empty": b"",
        "text": b"hello world",
        "random": bytes(range(256)) * 4,
        "truncated": lambda d: fixtures(d)["nc_bytes"][:2000],
        "half": lambda d: fixtures(d)["nc_bytes"][: len(fixtures(d)["nc_bytes"]) // 2],
        "hdf5 magic only": b"\x89HDF\r\n\x1a\n" + b"\x00" * 100,
        "netcdf3 header only": b"CDF\x01" + b"\x00" * 40,
    }.items():
        add("systems.load", name, load(bad_file(content)))
    add("systems.load", "missing", load(lambda d: d / "missing.nc"))
    add("systems.load", "a folder", load(lambda d: (d / "dir.nc").mkdir() or d / "dir.nc"))
    add("systems.load", "not a systems file", load(lambda d: fixtures(d)["other_nc"]))
    add("systems.load", "None", load(lambda d: None))

    # ---------------- dynfit.odesolve
    def ode(y0=None, t=None, field=None, **kw):
        def run(d):
            import torch

            from dynfit import odesolve

            y = torch.ones(2, 3, dtype=torch.float64) if y0 is None else y0()
            ts = torch.linspace(0, 1, 3, dtype=torch.float64) if t is None else t()
            f = (lambda t_, x: -x) if field is None else field
            return odesolve(f, y, ts, **kw)

        return run

    def T(*a, **k):
        def make():
            import torch

            return torch.tensor(*a, **{"dtype": torch.float64, **k})

        return make

    for name, y0 in {
        "y0 1-D": T([1.0, 2.0]),
        "y0 3-D": T([[[1.0]]]),
        "y0 NaN": T([[nan, 1.0]]),
        "y0 inf": T([[inf, 1.0]]),
        "y0 list": lambda: [[1.0, 2.0]],
        "y0 int": T([[1, 2]], dtype=None),
        "y0 empty batch": T([[]]),
        "y0 None-like": lambda: None,
    }.items():
        add("odesolve", name, ode(y0=y0))
    for name, t in {
        "t decreasing": T([0.0, 1.0, 0.5]),
        "t repeated": T([0.0, 0.0, 1.0]),
        "t NaN": T([0.0, nan]),
        "t 2-D": T([[0.0, 1.0]]),
        "t one point": T([0.0]),
        "t empty": T([]),
        "t inf": T([0.0, inf]),
    }.items():
        add("odesolve", name, ode(t=t))
    add(
        "odesolve", "t a list (converted)", ode(t=lambda: [0.0, 1.0]), may_succeed=_good_solution(2)
    )
    for v in ["euler", "", None, 3, "RKF45"]:
        add("odesolve", f"method={v!r}", ode(method=v))
    for v in [0.0, -0.1, nan, inf, "0.1"]:
        add("odesolve", f"step_size={v!r}", ode(step_size=v))
    for v in [0, -1, 1.5, "10", None]:
        add("odesolve", f"max_steps={v!r}", ode(max_steps=v))
    for v in [0.0, -1.0, nan, "0.1"]:
        add("odesolve", f"h0={v!r}", ode(h0=v))
    add("odesolve", "control=None", ode(control=None))
    add("odesolve", "control='tight'", ode(control="tight"))
    add("odesolve", "reference wrong shape", ode(reference=T([[1.0]])()))
    add("odesolve", "rk4 without step_size", ode(method="rk4"))
    add("odesolve", "field returns wrong shape", ode(field=lambda t, x: x[:, :1]))
    add("odesolve", "field returns NaN", ode(field=lambda t, x: x * nan))
    add("odesolve", "field returns list", ode(field=lambda t, x: [0.0]))
    add("odesolve", "field blows up", ode(field=lambda t, x: x**3 * 1e6, max_steps=50))
    add("odesolve", "field not callable", ode(field=3))
    add(
        "odesolve",
        "y0 float32 t float64",
        ode(y0=T([[1.0, 2.0]], dtype=__import__("torch").float32)),
        may_succeed=_good_solution(3),
    )

    # ---------------- dynfit.fit
    def fitc(data=None, **kw):
        def run(d):
            from dynfit.train import fit

            x = fixtures(d)["data"] if data is None else data(d)
            base = dict(
                field={"kind": "mlp", "width": 4, "depth": 1},
                epochs=1,
                lbfgs_iterations=2,
                progress=False,
                checkpoint_dir=d / "ck",
            )
            base.update(kw)
            return fit(x, **base)

        return run

    rng = np.random.default_rng(0)
    walk = rng.standard_normal((2, 50, 3)).cumsum(axis=1)
    datas = {
        "0 trajectories": lambda d: fixtures(d)["data"].isel(trajectory=slice(0, 0)),
        "0 trajectories numpy": lambda d: np.zeros((0, 50, 3)),
        "1 sample": lambda d: fixtures(d)["data"].isel(time=slice(0, 1)),
        "0 components": lambda d: np.zeros((2, 50, 0)),
        "NaN": lambda d: np.where(np.arange(300).reshape(2, 50, 3) == 7, nan, walk),
        "inf": lambda d: np.where(np.arange(300).reshape(2, 50, 3) == 7, inf, walk),
        "scaled 1e300": lambda d: fixtures(d)["data"] * 1e300,
        "scaled 1e200 numpy": lambda d: walk * 1e200,
        "constant component": lambda d: np.concatenate([walk, np.ones((2, 50, 1))], axis=2),
        "strings": lambda d: np.array([["a", "b"], ["c", "d"]]),
        "complex": lambda d: walk + 1j,
        "None": lambda d: None,
        "dict": lambda d: {"x": walk},
        "4-D": lambda d: walk[None],
        "1-D": lambda d: walk[0, :, 0],
        "numpy without dt": lambda d: walk,
        "Dataset without x": lambda d: fixtures(d)["data"].rename({"x": "y"}),
        "DataArray wrong dims": lambda d: __import__("xarray").DataArray(
            walk, dims=("a", "b", "c")
        ),
        "object array": lambda d: np.array([walk[0], None], dtype=object),
        "ragged list": lambda d: [[1.0, 2.0], [3.0]],
    }
    for name, data in datas.items():
        add("fit", f"data: {name}", fitc(data=data))
    add("fit", "dt=0.5 on data with dt 0.01", fitc(dt=0.5))
    for v in [0.0, -1.0, nan, inf, "0.01", True]:
        add("fit", f"dt={v!r}", fitc(data=lambda d: walk, dt=v))
    for key, values in {
        "epochs": [-1, 2.5, "3", None],
        "optimizer": ["sgd", 3],  # None is valid: the default optimizer
        "lr": [0.0, -1.0, nan, "fast"],
        "batch_size": [0, -1, 2.5, "8"],
        "horizon": [0, -1, 2.5, 10**6, True],
        "stride": [0, -1, 1.5],
        "lbfgs_iterations": [0, -1, 2.5],
        "lbfgs_tolerance": [0.0, -1.0, 2.0, "x"],
        "weight_decay": [-1.0, nan, "0"],
        "seed": [-1, 2.5, "0"],
        "strategy": ["nope", None, 3, {"name": "nope"}],
        "on_nan": ["ignore", None],
        "device": ["tpu", "cuda:99", 3, "gpu"],
        "dtype": ["float16", None, 3],  # "float64" is valid
        "field": [
            {"kind": "transformer"},
            {"kind": "mlp", "width": -1},
            {"kind": "mlp", "widht": 3},
            "mlp",
            3,
        ],
        "standardize": ["no"],
        "strategy_options": [{"eps": -1.0}, {"nope": 1}, "eps=1"],
    }.items():
        for v in values:
            add("fit", f"{key}={v!r}", fitc(**{key: v}))
    add(
        "fit",
        "checkpoint_dir under a file",
        lambda d: (d.joinpath("f").write_text("x"), fitc(checkpoint_dir=d / "f" / "ck")(d)),
    )
    for name, content in {
        "empty": b"",
        "garbage": b"\x00" * 100,
        "truncated model": None,
        "a model file": "model",
        "malicious": "evil",
    }.items():

        def run(d, name=name, content=content):
            ck = d / "ck"
            ck.mkdir()
            if content is None:
                (ck / "checkpoint.pt").write_bytes(fixtures(d)["model_bytes"][:500])
            elif content == "model":
                (ck / "checkpoint.pt").write_bytes(fixtures(d)["model_bytes"])
            elif content == "evil":
                _evil(ck / "checkpoint.pt", d / "pwned")
            else:
                (ck / "checkpoint.pt").write_bytes(content)
            try:
                return fitc()(d)
            finally:
                _assert_no_marker(d)

        add("fit", f"checkpoint: {name}", run)
    add(
        "fit",
        "checkpoint from another model",
        lambda d: (fitc()(d), fitc(field={"kind": "mlp", "width": 5})(d)),
    )
    add("fit", "checkpoint dir locked", lambda d: _locked(d / "ck", fitc()))
    add(
        "fit",
        "full disk during checkpoint",
        lambda d: _full_disk(fitc(epochs=2, checkpoint_dir=d / "ck"), d=d),
    )

    # ---------------- Surrogate.load
    def load_model(make):
        def run(d):
            from dynfit.surrogate import Surrogate

            try:
                return Surrogate.load(make(d))
            finally:
                _assert_no_marker(d)

        return run

    def model_bytes(fn):
        def make(d):
            p = d / "m.pt"
            p.write_bytes(fn(fixtures(d)["model_bytes"]))
            return p

        return make

    add("Surrogate.load", "missing", load_model(lambda d: d / "missing.pt"))
    add("Surrogate.load", "folder", load_model(lambda d: (d / "m.pt").mkdir() or d / "m.pt"))
    add("Surrogate.load", "empty", load_model(model_bytes(lambda b: b"")))
    add("Surrogate.load", "text", load_model(model_bytes(lambda b: b"not a model")))
    add("Surrogate.load", "a netCDF file", load_model(lambda d: fixtures(d)["test_nc"]))
    for frac in (0.05, 0.2, 0.5, 0.8, 0.95, 0.99):
        add(
            "Surrogate.load",
            f"truncated at {frac}",
            load_model(model_bytes(lambda b, f=frac: b[: int(len(b) * f)])),
        )
    frng = random.Random(0)
    for i in range(20):
        pos = frng.random()
        add(
            "Surrogate.load",
            f"byte flip {i} at {pos:.3f}",
            load_model(
                model_bytes(
                    lambda b, p=pos: b[: int(len(b) * p)]
                    + bytes([b[int(len(b) * p)] ^ 0xFF])
                    + b[int(len(b) * p) + 1 :]
                )
            ),
            may_succeed=_finite_model,
        )
    add("Surrogate.load", "malicious pickle", load_model(lambda d: _evil(d / "m.pt", d / "pwned")))
    add(
        "Surrogate.load",
        "malicious pickle in a model dict",
        load_model(lambda d: _evil(d / "m.pt", d / "pwned", wrap=True)),
    )
    for name, change in _model_variants().items():
        add(
            "Surrogate.load",
            name,
            load_model(lambda d, c=change: _torch_file(d / "m.pt", c(_model_dict(d)))),
            # the training strategy is provenance only (the solver is stored apart): a valid model
            may_succeed=_finite_model if name == "unknown strategy" else None,
        )

    # ---------------- Surrogate.generate
    def gen(x0, n_steps=5):
        def run(d):
            return fixtures(d)["surrogate"].generate(x0, n_steps)

        return run

    for name, x0 in {
        "x0 wrong dim": [1.0, 2.0],
        "x0 NaN": [nan, 1.0, 1.0],
        "x0 inf": [[inf, 0, 0]],
        "x0 strings": ["a", "b", "c"],
        "x0 3-D": np.zeros((1, 1, 3)),
        "x0 None": None,
    }.items():
        add("Surrogate.generate", name, gen(x0))
    add(
        "Surrogate.generate",
        "x0 an empty batch",
        gen(np.zeros((0, 3))),
        may_succeed=lambda r: getattr(r, "shape", None) == (0, 5, 3),
    )
    for v in [0, -1, 2.5, "5", None, True]:
        add("Surrogate.generate", f"n_steps={v!r}", gen([1.0, 1.0, 20.0], v))

    # ---------------- Surrogate.forecast, delay embedding, Estimator (issue 26)
    def fc(x0=(1.0, 1.0, 20.0), n_steps=5, **kw):
        def run(d):
            return fixtures(d)["surrogate"].forecast(
                list(x0) if isinstance(x0, tuple) else x0, n_steps, **kw
            )

        return run

    for name, kw in {
        "on_failure='loud'": {"on_failure": "loud"},
        "t0='0'": {"t0": "0"},
        "t0=nan": {"t0": nan},
        "n_steps='5'": {"n_steps": "5"},
    }.items():
        add("Surrogate.forecast", name, fc(**kw))
    add("Surrogate.forecast", "x0 wrong dim", fc(x0=(1.0, 2.0)))
    add(
        "Surrogate.generate",
        "vector_field returns NaN",
        lambda d: __import__("dynfit")
        .Surrogate.from_vector_field(lambda t, x: x * nan, 0.01, dim=3)
        .generate([1.0, 1.0, 1.0], 5),
    )
    add(
        "Surrogate.forecast",
        "vector_field returns inf",
        lambda d: __import__("dynfit")
        .Surrogate.from_vector_field(lambda t, x: x / 0.0, 0.01, dim=3)
        .forecast([1.0, 1.0, 1.0], 5),
    )
    add("Surrogate.equations", "an MLP field", lambda d: fixtures(d)["surrogate"].equations())
    add(
        "Surrogate.equations",
        "threshold='0.1'",
        lambda d: fixtures(d)["surrogate"].equations(threshold="0.1"),
    )
    add("fit", "data (N, D, T)", fitc(data=lambda d: walk.transpose(0, 2, 1), dt=0.01))
    add("fit", "data 1-D autonomous", fitc(data=lambda d: walk[:, :, :1], dt=0.01))
    add("fit", "embed=3", fitc(embed=3))
    add(
        "fit",
        "embed too long for the data",
        fitc(embed=__import__("dynfit.embedding", fromlist=["x"]).DelayEmbedding(lags=3, tau=100)),
    )
    for kw in [{"lags": "3"}, {"lags": 1}, {"tau": 0}, {"tau": 2.5}]:
        add("DelayEmbedding", f"{kw}", lambda d, kw=kw: __import__("dynfit").DelayEmbedding(**kw))
    for name, call in {
        "fit X text": lambda e: e.fit(np.array([["a", "b"]] * 5), 0.1),
        "fit t text": lambda e: e.fit(walk[0], "0.1"),
        "fit t decreasing": lambda e: e.fit(walk[0], np.arange(50)[::-1] * 0.1),
        "fit without t": lambda e: e.fit(walk[0]),
        "predict unfitted": lambda e: e.predict(walk[0]),
        "set_params unknown": lambda e: e.set_params(epoch=3),
    }.items():
        add("Estimator", name, lambda d, call=call: call(__import__("dynfit").Estimator(epochs=1)))

    # ---------------- evaluate
    def ev(surrogate=None, data=None, **kw):
        def run(d):
            from dynfit.diagnostics import evaluate

            f = fixtures(d)
            base = dict(
                n_starts=2, horizon_lt=1.0, long_steps=1000, lyapunov_steps=0, groundtruth=False
            )
            base.update(kw)
            return evaluate(
                f["surrogate"] if surrogate is None else surrogate(d),
                f["test"] if data is None else data(d),
                **base,
            )

        return run

    for key, values in {
        "n_starts": [0, -1, 2.5, "2", 10**6, 10**4],
        "horizon_lt": [0.0, -1.0, nan, inf, "1", 1e6],
        "thresholds": [[], [0.0], [1.5], [nan], "0.4", [[0.4]]],
        "long_steps": [0, 999, 2.5, "1000"],
        "lyapunov_steps": [-1, 2.5],
        "lyapunov_starts": [0, 1.5],
        "seed": [-1, 2.5, "0"],
    }.items():
        for v in values:
            add(
                "evaluate",
                f"{key}={v!r}",
                ev(**{key: v}),
                may_succeed=(
                    (lambda r: list(r["threshold"].values) == [0.4]) if v == "0.4" else None
                ),
            )
    add(
        "evaluate",
        "reference_solvers=[] with groundtruth",
        ev(reference_solvers=[], groundtruth=True),
    )
    add("evaluate", "NaN weights", ev(surrogate=_nan_surrogate))
    add("evaluate", "not a surrogate", ev(surrogate=lambda d: object()))
    add("evaluate", "data numpy", ev(data=lambda d: fixtures(d)["test"].x.values))
    add(
        "evaluate",
        "data of another system",
        ev(
            data=lambda d: __import__("systems").simulate(
                "rossler", n_traj=1, n_steps=300, dt=0.01, seed=0
            )
        ),
    )
    add(
        "evaluate",
        "data at a non-multiple step",
        ev(
            data=lambda d: __import__("systems").simulate(
                "lorenz63", n_traj=2, n_steps=200, dt=0.015, seed=0
            )
        ),
    )
    add(
        "evaluate",
        "data with NaN",
        ev(data=lambda d: fixtures(d)["test"].where(fixtures(d)["test"].time < 0.5)),
    )
    add(
        "evaluate", "data too short", ev(data=lambda d: fixtures(d)["test"].isel(time=slice(0, 10)))
    )
    add("evaluate", "data without x", ev(data=lambda d: fixtures(d)["test"].rename({"x": "y"})))

    # ---------------- TA-BN
    def tabn(ctor=None, x=None, t=0.5, train=True):
        def run(d):
            import torch

            from dynfit.nn.norm import TABatchNorm1d

            layer = TABatchNorm1d(
                **(
                    {"num_features": 3, "t_max": 1.0, "num_points": 4, "dtype": torch.float32}
                    | (ctor or {})
                )
            ).train(train)
            inp = torch.ones(4, 3) if x is None else x()
            return layer(t, inp)

        return run

    for key, values in {
        "num_features": [0, -1, 2.5, "3"],
        "num_points": [0, 1, 2.5],
        "t_max": [0.0, -1.0, nan],
        "momentum": [-0.1, 1.5, nan],
        "eps": [0.0, -1.0],
        "outside": ["wrap", 3],
    }.items():
        for v in values:
            add("TA-BN", f"{key}={v!r}", tabn(ctor={key: v}))
    import torch as _torch  # cheap here: the worker imports it anyway

    add("TA-BN", "batch of 0", tabn(x=lambda: _torch.zeros(0, 3)))
    add("TA-BN", "batch of 0 in eval mode", tabn(x=lambda: _torch.zeros(0, 3), train=False))
    add("TA-BN", "batch of 1", tabn(x=lambda: _torch.zeros(1, 3)))
    add("TA-BN", "float64 input", tabn(x=lambda: _torch.zeros(4, 3, dtype=_torch.float64)))
    add("TA-BN", "wrong features", tabn(x=lambda: _torch.zeros(4, 2)))
    add("TA-BN", "3-D input", tabn(x=lambda: _torch.zeros(4, 3, 1)))
    add("TA-BN", "numpy input", tabn(x=lambda: np.zeros((4, 3), np.float32)))
    add("TA-BN", "t NaN", tabn(t=nan))
    add("TA-BN", "t string", tabn(t="0.5"))
    add("TA-BN", "t per-example wrong length", tabn(t=_torch.zeros(3), train=False))

    # ---------------- configs
    def conf(raw):
        def run(d):
            from dynfit.config import validate

            return validate(raw)

        return run

    typed = {
        "data": {
            "n_traj": [0, 2.5, "8", True, -3],
            "n_steps": [1, 2.5, "x"],
            "dt": [0, -1, "0.01", True],
            "seed": [-1, 1.5],
            "transient": [-1, "1"],
            "noise": [-0.1, "0"],
            "horizon": [0, 1.5],
            "stride": [0, "1"],
            "standardize": ["no", "yes", 0, 1, "false"],
            "split_fraction": [2.0, 0.0, 1.0, -0.5, "0.8", True],
            "path": [3, True, ""],
            "system": [3, ""],
        },
        "field": {
            "kind": ["transformer", 3],
            "width": [-1, 2.5, "64"],
            "depth": [0, "2"],
            "activation": [3, ""],
            "time_dependent": ["no", 1],
            "dtype": ["float16", "double", 64],
        },
        "train": {
            "optimizer": ["sgd", 3],
            "epochs": [0, 2.5, "30", -1],
            "seed": [-1, 0.5],
            "lr": ["fast", 0, -1],
            "batch_size": [0, 2.5, "8"],
            "lbfgs_iterations": [0, 2.5],
            "lbfgs_tolerance": [0, "x"],
            "weight_decay": [-1, "0"],
            "device": ["tpu", "gpu", "cuda:x", 3, "CPU"],
        },
        "output": {"dir": [3, "", True]},
    }
    for section, keys in typed.items():
        for key, values in keys.items():
            for v in values:
                add("config", f"[{section}] {key} = {v!r}", conf({section: {key: v}}))
    for raw in [
        {"trian": {}},
        {"train": {"epoch": 3}},
        {"data": 3},
        {"strategy": {"name": "nope"}},
        {"strategy": {"name": 3}},
        {"strategy": {"name": "fehlberg", "epsilon": 1}},
        [1, 2],
    ]:
        add("config", f"raw {raw!r}", conf(raw))

    # ---------------- data helpers: make_windows, Standardizer, split
    def mw(**kw):
        def run(d):
            from dynfit.data import make_windows

            base = dict(dt=0.01)
            base.update(kw)
            return make_windows(base.pop("data", walk), **base)

        return run

    for key, values in {
        "horizon": [0, -1, 1.5, True, 10**6],
        "stride": [0, 1.5, "1"],
        "dt": [0.0, nan, "x"],
    }.items():
        for v in values:
            add("make_windows", f"{key}={v!r}", mw(**{key: v}))
    add(
        "make_windows",
        "scaler of another dim",
        mw(scaler=__import__("dynfit.data", fromlist=["x"]).Standardizer(np.zeros(2), np.ones(2))),
    )
    add(
        "Standardizer.fit",
        "no samples",
        lambda d: __import__("dynfit.data", fromlist=["x"]).Standardizer.fit(np.zeros((0, 3))),
    )
    add(
        "Standardizer.fit",
        "overflow",
        lambda d: __import__("dynfit.data", fromlist=["x"]).Standardizer.fit(
            np.array([[1e200], [-1e200]])
        ),
    )
    add(
        "Standardizer.fit",
        "NaN",
        lambda d: __import__("dynfit.data", fromlist=["x"]).Standardizer.fit(
            np.array([[nan], [1.0]])
        ),
    )
    for frac in [0.0, 1.0, 2.0, -1.0, nan]:
        add(
            "split",
            f"fraction={frac!r}",
            lambda d, f=frac: __import__("dynfit.data", fromlist=["x"]).split(walk, fraction=f),
        )
    add(
        "split",
        "by=space",
        lambda d: __import__("dynfit.data", fromlist=["x"]).split(walk, by="space"),
    )

    # ---------------- compare
    def cmp(**kw):
        def run(d):
            from dynfit.compare import compare

            base = dict(
                strategies=["fehlberg"],
                epochs=1,
                out=d / "out",
                test_data=fixtures(d)["test"],
                evaluate={"n_starts": 2, "horizon": 1.0, "long_steps": 1000, "lyapunov_steps": 0},
            )
            base.update(kw)
            return compare(base.pop("data", fixtures(d)["data"]), **base)

        return run

    add(
        "compare",
        "strategies a single name",
        cmp(strategies="fehlberg"),
        may_succeed=lambda r: list(r["strategy"].values) == ["fehlberg"],
    )
    for key, values in {
        "strategies": [[], ["nope"], [3], [{"name": "fehlberg", "eps": -1}]],
        "seeds": [[], [-1], [1.5], "0"],
        "epochs": [0, -1, 2.5],
        "evaluate": [{"nope": 1}, {"n_starts": 0}, {"n_starts": 10**6}],
    }.items():
        for v in values:
            add("compare", f"{key}={v!r}", cmp(**{key: v}))
    add("compare", "data numpy", cmp(data=walk))
    add(
        "compare",
        "out under a file",
        lambda d: (d.joinpath("f").write_text("x"), cmp(out=d / "f" / "o")(d)),
    )

    # ---------------- the command line
    def cli(*argv, setup=None, output=None):
        def run(d):
            f = fixtures(d)
            if setup is not None:
                setup(d)
            args = [a(d, f) if callable(a) else a for a in argv]
            return _run_cli(args, d, output)

        return run

    M, NC = (lambda d, f: str(f["model"])), (lambda d, f: str(f["test_nc"]))
    OUT = lambda d, f: str(d / "o")  # noqa: E731
    EV = [
        "--starts",
        "2",
        "--horizon-lt",
        "1",
        "--long-steps",
        "1000",
        "--lyapunov-steps",
        "0",
        "--no-figures",
    ]
    add(
        "cli evaluate",
        "missing model",
        cli("evaluate", lambda d, f: str(d / "no.pt"), NC, "--out", OUT, *EV),
        cli=True,
    )
    add(
        "cli evaluate",
        "missing data",
        cli("evaluate", M, lambda d, f: str(d / "no.nc"), "--out", OUT, *EV),
        cli=True,
    )
    add("cli evaluate", "model is a netCDF", cli("evaluate", NC, NC, "--out", OUT, *EV), cli=True)
    add("cli evaluate", "data is a model", cli("evaluate", M, M, "--out", OUT, *EV), cli=True)
    add(
        "cli evaluate",
        "data not a systems file",
        cli("evaluate", M, lambda d, f: str(f["other_nc"]), "--out", OUT, *EV),
        cli=True,
    )
    add(
        "cli evaluate",
        "corrupt data file",
        cli(
            "evaluate",
            M,
            lambda d, f: str(_write(d / "c.nc", b"CDF\x01" + b"\x00" * 9)),
            "--out",
            OUT,
            *EV,
        ),
        cli=True,
    )
    add(
        "cli evaluate",
        "truncated data file",
        cli(
            "evaluate",
            M,
            lambda d, f: str(_write(d / "t.nc", f["nc_bytes"][:3000])),
            "--out",
            OUT,
            *EV,
        ),
        cli=True,
    )
    add(
        "cli evaluate",
        "malicious model",
        cli("evaluate", lambda d, f: str(_evil(d / "e.pt", d / "pwned")), NC, "--out", OUT, *EV),
        cli=True,
    )
    add(
        "cli evaluate",
        "NaN model",
        cli("evaluate", lambda d, f: str(_nan_model_file(d)), NC, "--out", OUT, *EV),
        cli=True,
    )
    add(
        "cli evaluate",
        "out under a file",
        cli("evaluate", M, NC, "--out", lambda d, f: str(_write(d / "f", b"x") / "o"), *EV),
        cli=True,
    )
    add(
        "cli evaluate",
        "out is a file",
        cli("evaluate", M, NC, "--out", lambda d, f: str(_write(d / "f", b"x")), *EV),
        cli=True,
    )
    add(
        "cli evaluate",
        "full disk",
        lambda d: _full_disk(
            lambda: _run_cli(
                [
                    "evaluate",
                    str(fixtures(d)["model"]),
                    str(fixtures(d)["test_nc"]),
                    "--out",
                    str(d / "o"),
                    *EV,
                ],
                d,
                "o/diagnostics.nc",
            ),
            netcdf=True,
        ),
        cli=True,
    )
    add(
        "cli evaluate",
        "out locked",
        lambda d: _locked(
            d / "o",
            lambda dd: _run_cli(
                [
                    "evaluate",
                    str(fixtures(d)["model"]),
                    str(fixtures(d)["test_nc"]),
                    "--out",
                    str(d / "o"),
                    *EV,
                ],
                d,
                "o/diagnostics.nc",
            ),
        ),
        cli=True,
    )
    for flag, v in [
        ("--starts", "0"),
        ("--starts", "-3"),
        ("--starts", "100000"),
        ("--starts", "x"),
        ("--horizon-lt", "-1"),
        ("--horizon-lt", "nan"),
        ("--horizon-lt", "1e9"),
        ("--thresholds", "0,1"),
        ("--thresholds", "a,b"),
        ("--thresholds", ""),
        ("--long-steps", "5"),
        ("--seed", "-1"),
        ("--lyapunov-steps", "-5"),
    ]:
        args = [a for a in EV]
        if flag in args:
            i = args.index(flag)
            args[i + 1] = v
        else:
            args += [flag, v]
        add("cli evaluate", f"{flag} {v}", cli("evaluate", M, NC, "--out", OUT, *args), cli=True)

    def toml(text):
        def make(d, f):
            return str(_write(d / "c.toml", text.encode()))

        return make

    for text in [
        '[data]\nstandardize = "no"\n',
        '[train]\nlr = "fast"\n',
        "[train]\nepochs = 2.5\n",
        "[data]\nsplit_fraction = 2.0\n",
        '[train]\ndevice = "tpu"\n',
        "[data\n",
        "[trian]\n",
        '[data]\npath = "missing.nc"\n',
        "[data]\nn_traj = 0\n",
        '[field]\nkind = "cnn"\n',
        '[strategy]\nname = "nope"\n',
        "[output]\ndir = 3\n",
        "\x00\x01",
        '[data]\ndt = "0.01"\n',
        '[train]\ndevice = "cuda:7"\n',
        '[data]\npath = "x.csv"\n',
    ]:
        add(
            "cli train",
            f"config {text!r}",
            cli("train", toml(text), "--out", OUT, "--no-progress"),
            cli=True,
        )
    add(
        "cli train",
        "missing config",
        cli("train", lambda d, f: str(d / "no.toml"), "--out", OUT),
        cli=True,
    )
    add(
        "cli train", "config is a folder", cli("train", lambda d, f: str(d), "--out", OUT), cli=True
    )
    add(
        "cli train",
        "data path corrupt",
        cli(
            "train",
            lambda d, f: str(
                _write(
                    d / "c.toml", f'[data]\npath = "{_write(d / "bad.nc", b"garbage")}"\n'.encode()
                )
            ),
            "--out",
            OUT,
        ),
        cli=True,
    )
    add(
        "cli train",
        "npy data without dt",
        cli(
            "train",
            lambda d, f: str(
                _write(d / "c.toml", f'[data]\npath = "{_npy(d / "x.npy", walk)}"\n'.encode())
            ),
            "--out",
            OUT,
        ),
        cli=True,
    )
    add(
        "cli train",
        "npy data corrupt",
        cli(
            "train",
            lambda d, f: str(
                _write(
                    d / "c.toml",
                    f'[data]\npath = "{_write(d / "x.npy", b"garbage")}"\ndt = 0.01\n'.encode(),
                )
            ),
            "--out",
            OUT,
        ),
        cli=True,
    )
    add(
        "cli train",
        "out under a file",
        cli(
            "train",
            toml("[train]\nepochs = 1\n"),
            "--out",
            lambda d, f: str(_write(d / "f", b"x") / "o"),
        ),
        cli=True,
    )
    add(
        "cli train",
        "out locked",
        lambda d: _locked(
            d / "o",
            lambda dd: _run_cli(
                [
                    "train",
                    toml("[data]\nn_traj = 2\nn_steps = 30\n[train]\nepochs = 1\n")(d, None),
                    "--out",
                    str(d / "o"),
                    "--no-progress",
                ],
                d,
                "o/model.pt",
            ),
        ),
        cli=True,
    )
    for name, argv in {
        "no file": ["plot"],
        "missing file": ["plot", "/nonexistent/x.nc"],
        "a model": ["plot", M],
        "a systems file": ["plot", NC],
        "garbage": ["plot", lambda d, f: str(_write(d / "g.nc", b"garbage"))],
        "other netCDF": ["plot", lambda d, f: str(f["other_nc"])],
    }.items():
        add("cli plot", name, cli(*argv, "--out", OUT), cli=True)
    for name, argv in {
        "unknown strategy": ["--strategy", "nope"],
        "bad strategy option": ["--strategy", "fehlberg:eps=-1"],
        "bad option syntax": ["--strategy", "fehlberg:eps"],
        "bad seeds": ["--seeds", "a,b"],
        "epochs 0": ["--epochs", "0"],
        "missing config": [lambda d, f: str(d / "no.toml")],
        "bad config": [toml("[train]\nseeds = 3\n")],
        "unknown key": [toml("[train]\nepoch = 3\n")],
        "missing train data": ["--train-data", lambda d, f: str(d / "no.nc")],
        "train data not systems": ["--train-data", lambda d, f: str(f["other_nc"])],
        "starts 0": ["--starts", "0"],
        "width -1": ["--width", "-1"],
        "optimizer sgd": ["--optimizer", "sgd"],
    }.items():
        add("cli compare", name, cli("compare", *argv, "--out", OUT, "--no-progress"), cli=True)
    for name, argv in {
        "unknown command": ["frobnicate"],
        "no command": [],
        "demo bad epochs": ["demo", "--epochs", "x"],
        "demo out under a file": [
            "demo",
            "--quick",
            "--no-progress",
            "--out",
            lambda d, f: str(_write(d / "f", b"x") / "o"),
        ],
        "demo unknown strategy": [
            "demo",
            "--quick",
            "--no-progress",
            "--strategy",
            "nope",
            "--out",
            OUT,
        ],
    }.items():
        add("cli misc", name, cli(*argv), cli=True)

    # ---------------- the remaining bad inputs of issue 26
    # unwritable: as root a chmod stops nothing, but no one can write under a regular file
    nowhere = Path("/etc/passwd") / "dynfit"
    add(
        "unwritable",
        "systems.save",
        lambda d: __import__("systems").save(fixtures(d)["test"], nowhere / "x.nc"),
    )
    add(
        "unwritable",
        "write_netcdf",
        lambda d: __import__("dynfit.io", fromlist=["x"]).write_netcdf(
            fixtures(d)["test"], nowhere / "x.nc"
        ),
    )
    add("unwritable", "Surrogate.save", lambda d: fixtures(d)["surrogate"].save(nowhere / "m.pt"))
    add("unwritable", "fit checkpoint_dir", fitc(checkpoint_dir=nowhere / "ck"))
    add(
        "unwritable",
        "cli train --out",
        cli(
            "train",
            toml("[data]\nn_traj = 2\nn_steps = 30\n"),
            "--out",
            str(nowhere),
            "--no-progress",
        ),
        cli=True,
    )
    add(
        "unwritable",
        "cli evaluate --out",
        cli("evaluate", M, NC, "--out", str(nowhere), *EV),
        cli=True,
    )
    add(
        "unwritable",
        "cli demo --out",
        cli("demo", "--quick", "--no-progress", "--out", str(nowhere)),
        cli=True,
    )
    # numbers given as text
    for text in [
        '[data]\nn_traj = "3"\n',
        '[train]\nepochs = "3"\n',
        '[train]\nlr = "1e-3"\n',
        '[data]\nnoise = "0.01"\n',
        '[data]\nsplit_fraction = "0.8"\n',
    ]:
        add(
            "numbers as text",
            f"config {text!r}",
            cli("train", toml(text), "--out", OUT, "--no-progress"),
            cli=True,
        )
    for key, v in {
        "epochs": "3",
        "lr": "0.01",
        "horizon": "8",
        "lbfgs_iterations": "2",
        "dt": "0.01",
    }.items():
        add("numbers as text", f"fit {key}={v!r}", fitc(**{key: v}))
    add(
        "numbers as text",
        "Estimator(epochs='1')",
        lambda d: __import__("dynfit").Estimator(epochs="1").fit(walk[0], 0.01),
    )
    add(
        "numbers as text",
        "cli evaluate --dt 0.01s",
        cli(
            "evaluate",
            M,
            lambda d, f: str(_npy(d / "x.npy", walk)),
            "--dt",
            "0.01s",
            "--out",
            OUT,
            *EV,
        ),
        cli=True,
    )
    # a config path that is a folder or a binary file; a TOML that is not a dynfit config
    add("config file", "a folder", cli("train", lambda d, f: str(d), "--out", OUT), cli=True)
    add("config file", "a binary file (a model)", cli("train", M, "--out", OUT), cli=True)
    add(
        "config file",
        "a binary file named .toml",
        cli("train", lambda d, f: str(_write(d / "c.toml", bytes(range(256)))), "--out", OUT),
        cli=True,
    )
    add("config file", "a netCDF file", cli("train", NC, "--out", OUT), cli=True)
    for name, text in {
        "pyproject.toml": '[project]\nname = "mine"\nversion = "1.0"\n'
        '[tool.black]\nline-length = 100\n',
        "top-level keys": 'title = "an example"\n[owner]\nname = "Tom"\n',
        "data as an array of tables": '[[data]]\nn_traj = 2\n',
    }.items():
        add(
            "config file",
            f"not a dynfit config: {name}",
            cli("train", toml(text), "--out", OUT),
            cli=True,
        )

    # a state dict saved with another TA-BN grid
    def other_grid(d, via_model: bool):
        import torch

        from dynfit.nn.norm import TABatchNorm1d

        if not via_model:
            return TABatchNorm1d(3, num_points=4).load_state_dict(
                TABatchNorm1d(3, num_points=9).state_dict()
            )
        from dynfit.surrogate import Surrogate

        cfg = {"kind": "mlp", "width": 8, "depth": 2, "norm": "tabn", "num_points": 9}
        sur = Surrogate(
            __import__("dynfit.surrogate", fromlist=["x"]).build_field(cfg, 3),
            fixtures(d)["surrogate"].scaler,
            0.01,
            field_config=cfg,
        )
        path = sur.save(d / "m.pt")
        blob = torch.load(path, weights_only=True)
        blob["field_config"]["num_points"] = 5  # the file's tables have 9 rows
        torch.save(blob, path)
        return Surrogate.load(path)

    add("TA-BN grid", "load_state_dict from another grid", lambda d: other_grid(d, False))
    add("TA-BN grid", "model file whose tables have another grid", lambda d: other_grid(d, True))
    # vector_field returning NaN (at the start or later)
    add(
        "NaN field",
        "forecast: vector_field NaN at the start",
        lambda d: __import__("dynfit")
        .Surrogate.from_vector_field(lambda t, x: x * nan, 0.01, dim=3)
        .forecast([1.0, 1.0, 1.0], 5),
    )
    add(
        "NaN field",
        "forecast raise: NaN after the start",
        lambda d: __import__("dynfit")
        .Surrogate.from_vector_field(
            lambda t, x: x * (1.0 if float(t) < 0.02 else nan), 0.01, dim=3
        )
        .forecast([1.0, 1.0, 1.0], 10, on_failure="raise"),
    )
    # an all-default `dynfit train` config: progress must show within seconds
    add(
        "default run",
        "empty config shows progress",
        _default_run_progress,
        may_succeed=lambda r: r is True,
    )
    return cases


# ------------------------------------------------------------------ helpers used by the cases
def _default_run_progress(d: Path, wait_s: float = 60.0) -> bool:
    """``dynfit train`` on an empty config (every default: minutes of work) prints progress on
    stderr within ``wait_s`` seconds; the run is then stopped. True when it did."""
    import select
    import subprocess

    cfg = _write(d / "empty.toml", b"")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("TQDM_DISABLE", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dynfit", "train", str(cfg), "--out", str(d / "o")],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=env,
        cwd=ROOT,
    )
    seen = b""
    try:
        end = time.monotonic() + wait_s
        while time.monotonic() < end and proc.poll() is None and not seen.strip():
            if select.select([proc.stderr], [], [], 1.0)[0]:
                seen += os.read(proc.stderr.fileno(), 4096)
    finally:
        proc.kill()
        proc.wait()
    if not seen.strip():
        raise AssertionError(f"no progress on stderr within {wait_s:g} s")
    return True


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _evil(path: Path, marker: Path, wrap: bool = False) -> Path:
    import torch

    from dynfit.surrogate import FORMAT

    torch.save({"format": FORMAT, "x": _Evil(marker)} if wrap else _Evil(marker), path)
    return path


def _assert_no_marker(d: Path) -> None:
    if (d / "pwned").exists():
        raise _CodeRan(f"code from a file ran (marker {d / 'pwned'} exists)")


class _CodeRan(Exception):
    pass


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _npy(path: Path, arr) -> Path:
    import numpy as np

    np.save(path, arr)
    return path


def _torch_file(path: Path, obj) -> Path:
    import torch

    torch.save(obj, path)
    return path


def _model_dict(d: Path) -> dict:
    import torch

    return torch.load(fixtures(d)["model"], weights_only=True)


def _model_variants() -> dict:
    import torch

    def setk(**kw):
        return lambda b: {**b, **kw}

    def drop(key):
        return lambda b: {k: v for k, v in b.items() if k != key}

    def weights(fn):
        return lambda b: {**b, "state_dict": {k: fn(v) for k, v in b["state_dict"].items()}}

    out = {
        f"without {k}": drop(k)
        for k in (
            "format",
            "state_dict",
            "scaler",
            "dt",
            "field_config",
            "strategy",
            "dtype",
            "provenance",
        )
    }
    out.update(
        {
            "only the format": lambda b: {"format": b["format"]},
            "a list": lambda b: [b],
            "a tensor": lambda b: torch.zeros(3),
            "dt 0": setk(dt=0.0),
            "dt -1": setk(dt=-1.0),
            "dt nan": setk(dt=float("nan")),
            "dt inf": setk(dt=float("inf")),
            "dt string": setk(dt="0.01"),
            "dt None": setk(dt=None),
            "std 0": setk(scaler={"mean": [0.0] * 3, "std": [0.0] * 3}),
            "std negative": setk(scaler={"mean": [0.0] * 3, "std": [-1.0] * 3}),
            "std inf": setk(scaler={"mean": [0.0] * 3, "std": [float("inf")] * 3}),
            "mean nan": setk(scaler={"mean": [float("nan")] * 3, "std": [1.0] * 3}),
            "scaler lengths differ": setk(scaler={"mean": [0.0] * 2, "std": [1.0] * 3}),
            "scaler strings": setk(scaler={"mean": ["a"] * 3, "std": [1.0] * 3}),
            "scaler empty": setk(scaler={"mean": [], "std": []}),
            "NaN weights": weights(lambda v: v * float("nan")),
            "inf weights": weights(lambda v: v + float("inf")),
            "wrong shapes": weights(lambda v: torch.zeros(v.shape[0] + 1, *v.shape[1:])),
            "weights as lists": weights(lambda v: v.tolist()),
            "no weights": setk(state_dict={}),
            "extra weight": lambda b: {
                **b,
                "state_dict": {**b["state_dict"], "extra": torch.zeros(2)},
            },
            "dtype int64": setk(dtype="int64"),
            "dtype nonsense": setk(dtype="float128"),
            "unknown field kind": setk(field_config={"kind": "transformer"}),
            "bad field option": setk(field_config={"kind": "mlp", "widht": 8}),
            "field config a string": setk(field_config="mlp"),
            "unknown strategy": setk(strategy={"name": "nope"}),
            "strategy a number": setk(strategy=3),
            "provenance a list": setk(provenance=[1]),
            "format of a checkpoint": setk(format="dynfit-checkpoint-1"),
        }
    )
    return out


def _good_solution(n_t):
    def check(sol) -> bool:
        import torch

        return tuple(sol.ys.shape[:1]) == (n_t,) and bool(torch.isfinite(sol.ys).all())

    return check


def _finite_model(result) -> bool:
    import numpy as np
    import torch

    return (
        all(bool(torch.isfinite(p).all()) for p in result.field.parameters())
        and result.dt > 0
        and np.isfinite(result.scaler.std).all()
        and (result.scaler.std > 0).all()
    )


def _nan_surrogate(d: Path):
    import copy

    import torch

    sur = copy.deepcopy(fixtures(d)["surrogate"])
    with torch.no_grad():
        next(sur.field.parameters())[0, 0] = float("nan")
    return sur


def _nan_model_file(d: Path) -> Path:
    import torch

    blob = _model_dict(d)
    blob["state_dict"] = {k: v * float("nan") for k, v in blob["state_dict"].items()}
    torch.save(blob, d / "nan.pt")
    return d / "nan.pt"


def _locked(folder: Path, fn):
    from systems.files import FolderLock

    with FolderLock(folder):
        return fn(folder.parent)


def _full_disk(fn, netcdf: bool = False, d: Path | None = None):
    """Run fn with writes failing with ENOSPC after 2 kB (os.write and, with netcdf, xarray's
    writer)."""
    import xarray as xr

    real_write, real_nc = os.write, xr.Dataset.to_netcdf
    left = {"n": 2048}

    def write(fd, data):
        if left["n"] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        k = min(len(data), left["n"])
        left["n"] -= k
        return real_write(fd, bytes(data[:k]))

    def to_netcdf(self, path=None, *args, **kwargs):
        if path is None:
            return real_nc(self, path, *args, **kwargs)
        Path(path).write_bytes(
            b"CDF\x01" + b"\x00" * 100
        )  # the library wrote a little, then the disk filled
        raise OSError(errno.ENOSPC, "No space left on device")

    os.write = write
    if netcdf:
        xr.Dataset.to_netcdf = to_netcdf
    try:
        return fn() if d is None else fn(d)
    finally:
        os.write = real_write
        xr.Dataset.to_netcdf = real_nc


class CliResult:
    def __init__(self, code, err, out_file):
        self.code, self.err, self.out_file = code, err, out_file


def _run_cli(argv, d: Path, output=None):
    from contextlib import redirect_stderr, redirect_stdout

    from dynfit.cli import main

    err, out = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(out):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # argparse: usage and one error line, exit 2
            code = e.code if isinstance(e.code, int) else 2
    return CliResult(code, err.getvalue(), d / output if output else None)


# ------------------------------------------------------------------ running and classifying
EXPECTED_NAMES = (
    "ValueError",
    "TypeError",
    "OSError",
    "MemoryError",
    "FolderLockedError",
    "SolverError",
    "IntegrationError",
    "FloatingPointError",
)


def _ours(tb) -> bool:
    """Was the exception raised by dynfit, systems or _dyncore code (the innermost frame of ours
    is the raiser)?"""
    frames = traceback.extract_tb(tb)
    if not frames:
        return False
    last = Path(frames[-1].filename).resolve()
    return any(str(last).startswith(str(ROOT / pkg)) for pkg in ("dynfit", "systems", "_dyncore"))


def _leftovers(d: Path) -> list[str]:
    from systems.files import TEMP_PREFIX

    bad = []
    for p in d.rglob("*"):
        if p.is_dir() or p.name == ".dynfit.lock" or p.parent.name == "__pycache__":
            continue
        if p.name.startswith(TEMP_PREFIX) or ".tmp" in p.name:
            bad.append(f"temp {p.relative_to(d)}")
    return bad


def classify(case: Case, d: Path) -> tuple[str, str]:
    import warnings

    before = {p for p in d.rglob("*")}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = case.fn(d)
    except _CodeRan as err:
        return "silent-wrong", str(err)
    except KeyboardInterrupt:
        raise
    except BaseException as err:  # noqa: BLE001 - classifying every outcome is the point
        left = _leftovers(d)
        if (d / "pwned").exists():
            return "silent-wrong", "code from a file ran"
        if left:
            return "partial-file", f"{type(err).__name__}: {err}; left {left}"
        names = {c.__name__ for c in type(err).__mro__}
        msg = str(err)
        if names & set(EXPECTED_NAMES) and _ours(err.__traceback__) and len(msg.strip()) >= 10:
            return "clear", f"{type(err).__name__}: {msg[:160]}"
        where = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
        return "unclear", (
            f"{type(err).__name__}: {msg[:200]} (raised at {where.filename}:{where.lineno})"
            if where
            else f"{type(err).__name__}: {msg[:200]}"
        )
    if (d / "pwned").exists():
        return "silent-wrong", "code from a file ran"
    if isinstance(result, CliResult):
        left = _leftovers(d)
        lines = [line for line in result.err.strip().splitlines() if line.strip()]
        if left:
            return "partial-file", f"exit {result.code}; left {left}"
        if result.code == 0:
            return "silent-wrong", "exit 0"
        if result.out_file is not None and result.out_file.exists():
            return "partial-file", f"exit {result.code} but {result.out_file.name} exists"
        usage = (
            bool(lines) and lines[0].startswith("usage:") and ": error: " in lines[-1]
        )  # argparse's
        if result.code == 2 and (len(lines) == 1 or usage) and "Traceback" not in result.err:
            return "clear", lines[-1][:160]
        return "unclear", f"exit {result.code}: {result.err.strip()[-300:]}"
    if case.may_succeed is not None and case.may_succeed(result):
        return "clear", "a harmless change: the result is valid"
    left = _leftovers(d)
    if left:
        return "partial-file", f"returned; left {left}"
    return "silent-wrong", f"returned {type(result).__name__}"


def _worker(conn, workdir: str):
    import numpy as np  # noqa: F401
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("TQDM_DISABLE", "1")
    cases = _cases()
    fixtures(Path(workdir) / "_fixtures")
    conn.send("ready")
    while True:
        i = conn.recv()
        if i is None:
            return
        d = Path(workdir) / f"case{i:04d}"
        d.mkdir(parents=True, exist_ok=True)
        try:
            conn.send(classify(cases[i], d))
        except BaseException as err:  # noqa: BLE001
            conn.send(("unclear", f"classifier: {type(err).__name__}: {err}"))


class Runner:
    def __init__(self, workdir: Path, timeout: float = TIMEOUT_S):
        self.workdir, self.timeout, self.proc, self.conn = workdir, timeout, None, None

    def start(self):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, str(self.workdir)), daemon=True)
        self.proc.start()
        if not self.conn.poll(300) or self.conn.recv() != "ready":
            raise RuntimeError("fuzz worker did not start")

    def run(self, i: int) -> tuple[str, str]:
        if self.proc is None or not self.proc.is_alive():
            self.start()
        self.conn.send(i)
        if self.conn.poll(self.timeout):
            try:
                return self.conn.recv()
            except EOFError:
                self.proc = None
                return "unclear", "the worker died (crash)"
        self.proc.kill()
        self.proc.join()
        self.proc = None
        return "hang", f"no answer in {self.timeout:.0f} s"

    def close(self):
        if self.proc is not None and self.proc.is_alive():
            self.conn.send(None)
            self.proc.join(10)
            if self.proc.is_alive():
                self.proc.kill()


def run_cases(indices, workdir: Path, *, timeout: float = TIMEOUT_S, verbose: bool = True):
    """Run the cases with these indices; returns [(case, outcome, detail)]."""
    cases = _cases()
    runner = Runner(workdir, timeout)
    results = []
    try:
        for i in indices:
            outcome, detail = runner.run(i)
            results.append((cases[i], outcome, detail))
            if verbose and outcome != "clear":
                print(f"  {outcome:12s} {cases[i].entry}: {cases[i].name}: {detail}", flush=True)
    finally:
        runner.close()
    return results


def report(results) -> str:
    table = collections.OrderedDict()
    for case, outcome, _ in results:
        table.setdefault(case.entry, collections.Counter())[outcome] += 1
    lines = [
        f"| entry point | cases | {' | '.join(OUTCOMES)} |",
        "|---|---:|" + "---:|" * len(OUTCOMES),
    ]
    total = collections.Counter()
    for entry, counts in table.items():
        total.update(counts)
        lines.append(
            f"| {entry} | {sum(counts.values())} | "
            + " | ".join(str(counts[o]) for o in OUTCOMES)
            + " |"
        )
    lines.append(
        f"| **all** | {sum(total.values())} | " + " | ".join(str(total[o]) for o in OUTCOMES) + " |"
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sample", type=int, default=None, help="run a seeded sample of this many cases"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--entry", default=None, help="only the cases of this entry point")
    parser.add_argument(
        "--timeout", type=float, default=TIMEOUT_S, help="seconds before a case counts as a hang"
    )
    args = parser.parse_args(argv)
    cases = _cases()
    indices = [i for i, c in enumerate(cases) if args.entry is None or c.entry == args.entry]
    if args.sample is not None:
        indices = sorted(random.Random(args.seed).sample(indices, min(args.sample, len(indices))))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dynfit-fuzz-") as tmp:
        results = run_cases(indices, Path(tmp), timeout=args.timeout)
    print(report(results))
    bad = sum(1 for _, o, _ in results if o != "clear")
    print(f"{len(results)} cases in {time.perf_counter() - t0:.0f} s; {bad} not clear")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
