"""Largest Lyapunov exponent of every supported dysts flow: ours against dysts' estimate.

For each flow of ``systems.dysts_names(supported_only=True)`` this computes
the largest exponent with ``systems.lyapunov_spectrum`` (QR/Benettin on the
tangent dynamics, fixed-step RK4, k = 1) from dysts' initial condition, and
sets it beside dysts' ``maximum_lyapunov_estimated`` (and the first entry of
its ``lyapunov_spectrum_estimated``) from the same dysts version. The step is
``STEP_FACTOR`` times dysts' ``dt`` (dysts' dt is about period / 5000, an
integration step; at 20 x dt the result still changed for many flows, see
docs/catalogue.md); on a blow-up the step is divided
by 4 and the run repeated. The average runs over ``n_steps`` steps after the
default transient (20 / lambda_dysts, else 2000 steps); the same time is run
again at 4x the step, a column that shows where the step still matters.

    python examples/dysts_lyapunov.py            # every flow; the table into docs/catalogue.md
    python examples/dysts_lyapunov.py --quick    # five flows, short runs, prints the table only
    python examples/dysts_lyapunov.py --names Lorenz Aizawa --n-steps 800000 --step-factor 5
                                                 # a check, not stored

``--catalogue NAME...`` instead recomputes the "own estimate" reference
exponents of our catalogue (RK4 at dt/2 over T = 40000, T = 200000 for
``hindmarsh_rose`` and ``nose_hoover``), the command cited in
``systems/data/systems.json``. ``--two-trajectory NAME...`` checks flows by
the two-trajectory method with adaptive DOP853 (no tangent code, no fixed
step).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

import systems
from systems.files import atomic_write_bytes

STEP_FACTOR = 5  # RK4 step = STEP_FACTOR * dysts' dt (about period / 1000)
N_STEPS = 800_000
DISAGREE = 0.10  # relative difference listed as a disagreement
QUICK_NAMES = ["Lorenz", "Rossler", "Aizawa", "SprottB", "Chen"]
START, END = "<!-- dysts-lyapunov:start -->", "<!-- dysts-lyapunov:end -->"
ROOT = Path(__file__).resolve().parents[1]
CATALOGUE_T = {"hindmarsh_rose": 200_000.0, "nose_hoover": 200_000.0}


def largest_exponent(
    system: systems.System, n_steps: int, factor: float = STEP_FACTOR
) -> tuple[float, float, float]:
    """(lambda_1, step, averaging time) for a dysts System; smaller steps after a blow-up."""
    for attempt in range(3):
        h = system.dt * factor / 4**attempt
        try:
            lam = systems.lyapunov_spectrum(system, n_steps=n_steps, dt=h, k=1)[0]
        except systems.BlowUpError:
            continue
        if np.isfinite(lam):
            return float(lam), h, n_steps * h
    return math.nan, math.nan, math.nan


def run(names: list[str], n_steps: int, factor: float = STEP_FACTOR) -> list[dict]:
    rows = []
    for i, name in enumerate(names):
        t0 = time.perf_counter()
        s = systems.from_dysts(name)
        lam, h, T = largest_exponent(s, n_steps, factor)
        # same time, 4x the step: a convergence check
        coarse, _, _ = largest_exponent(s, n_steps // 4, 4 * factor)
        ref = s.lyapunov_max
        spec = s.metadata.get("lyapunov_spectrum_estimated") or [None]
        row = dict(
            name=name,
            dim=s.dim,
            jacobian=s.metadata["jacobian"],
            ours=lam,
            ours_4x_step=coarse,
            step=h,
            time=T,
            dysts_max=ref,
            dysts_spectrum_first=spec[0],
            seconds=round(time.perf_counter() - t0, 1),
            ratio=lam / ref if ref and np.isfinite(lam) else math.nan,
        )
        rows.append(row)
        print(
            f"[{i + 1}/{len(names)}] {name:24s} ours {lam:10.4g}  dysts {ref!s:10.6}  ratio "
            f"{row['ratio']:.3f}  "
            f"({row['seconds']} s)",
            flush=True,
        )
    return rows


def table(rows: list[dict], version: str, command: str, factor: float = STEP_FACTOR) -> str:
    """Markdown: one row per flow, then the disagreements."""
    out = [
        f"Computed by `{command}` with dysts {version}: RK4 "
        f"at {factor:g} x dysts' `dt` (step divided by 4 "
        f"after a blow-up), k = 1, from dysts' initial condition. `ratio` = ours / dysts' "
        "`maximum_lyapunov_estimated`; `spectrum[0]` is the first entry of dysts' "
        "`lyapunov_spectrum_estimated`.",
        "",
        "| dysts flow | dim | Jacobian | step | T | ours | ours, 4x step | dysts max | dysts "
        "spectrum[0] | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        sp = r["dysts_spectrum_first"]
        out.append(
            f"| {r['name']} | {r['dim']} | "
            f"{'dysts' if r['jacobian'].startswith('analytic') else 'FD'} | "
            f"{r['step']:.3g} | {r['time']:.4g} | {r['ours']:.4g} | {r['ours_4x_step']:.4g} | "
            f"{r['dysts_max']:.4g} | "
            f"{'' if sp is None else f'{sp:.4g}'} | {r['ratio']:.3f} |"
        )
    bad = [r for r in rows if not (abs(r["ratio"] - 1) <= DISAGREE)]
    out += [
        "",
        f"{len(rows) - len(bad)} of {len(rows)} flows "
        f"agree within {DISAGREE:.0%}; {len(bad)} do not.",
        "",
    ]
    return "\n".join(out)


def write_into(doc: Path, text: str) -> None:
    """Replace the text between the START and END markers of ``doc`` (appended if absent)."""
    old = doc.read_text()
    block = f"{START}\n{text}\n{END}"
    if START in old and END in old:
        new = old[: old.index(START)] + block + old[old.index(END) + len(END) :]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write_bytes(doc, new.encode())


def two_trajectory_exponent(
    system: systems.System, T: float, tau: float, d0: float = 1e-8, tol: float = 1e-11
) -> float:
    """Benettin's original two-trajectory estimate, independent of the tangent code and of a
    fixed step: a reference and a neighbour d0 away are integrated with adaptive DOP853
    (rtol = atol = tol) for tau, the separation is logged and reset to d0 along its direction,
    over T after a transient of T / 10."""
    from systems.integrate import integrate

    x = integrate(system, system.x0, np.array([0.0, T / 10]), method="dop853", rtol=tol,
                  atol=tol).x[0, -1]
    rng = np.random.default_rng(0)
    v = rng.standard_normal(system.dim)
    pair = np.stack([x, x + d0 * v / np.linalg.norm(v)])
    total, t = 0.0, T / 10
    for _ in range(int(round(T / tau))):
        pair = integrate(system, pair, np.array([t, t + tau]), method="dop853", rtol=tol,
                         atol=tol).x[:, -1]
        t += tau
        d = pair[1] - pair[0]
        nd = np.linalg.norm(d)
        total += math.log(nd / d0)
        pair[1] = pair[0] + d * (d0 / nd)
    return total / T


def catalogue_estimates(names: list[str]) -> None:
    """Recompute our own reference estimates: RK4 at dt/2 over T (k = 1), four windows averaged."""
    for name in names:
        s = systems.get(name)
        T = CATALOGUE_T.get(name, 40_000.0)
        h = s.dt / 2
        lam = systems.lyapunov_spectrum(s, n_steps=int(round(T / h)), dt=h, k=1)[0]
        print(f"{name}: lambda_max = {lam:.4f} (RK4, step {h:g}, T = {T:g})", flush=True)


def main(argv: list[str] | None = None) -> list[dict] | None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help=f"only {QUICK_NAMES}, 40000 steps, no files written")
    ap.add_argument("--names", nargs="+", help="dysts flows (default: every supported one)")
    ap.add_argument("--n-steps", type=int, default=N_STEPS,
                    help=f"RK4 steps averaged over (default {N_STEPS})")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "catalogue.md",
                    help="markdown file to write the table into")
    ap.add_argument(
        "--json",
        type=Path,
        default=ROOT / "systems" / "data" / "dysts_lyapunov.json",
        help="results (read by systems.from_dysts for lyapunov_max_computed and reference_matched)",
    )
    ap.add_argument(
        "--step-factor",
        type=float,
        default=STEP_FACTOR,
        help=f"RK4 step in units of dysts' dt (default {STEP_FACTOR}); a check of step-size "
        "effects",
    )
    ap.add_argument("--two-trajectory", nargs="+", metavar="NAME",
                    help="check dysts flows by the two-trajectory method (adaptive DOP853) instead")
    ap.add_argument("--time", type=float, default=2000.0,
                    help="averaging time of --two-trajectory (default 2000)")
    ap.add_argument("--catalogue", nargs="+", metavar="NAME",
                    help="recompute our catalogue's own estimates instead")
    args = ap.parse_args(argv)
    if args.catalogue:
        catalogue_estimates(args.catalogue)
        return None
    if args.two_trajectory:
        for name in args.two_trajectory:
            s = systems.from_dysts(name)
            tau = float(s.metadata.get("period") or 1.0) / 4
            lam = two_trajectory_exponent(s, args.time, tau)
            print(
                f"{name}: two-trajectory lambda_max = {lam:.4g} "
                f"(DOP853 at 1e-11, T = {args.time:g}, "
                f"renormalised every {tau:.3g}); dysts {s.lyapunov_max:.4g}",
                flush=True,
            )
        return None
    if args.n_steps < 1000:
        ap.error(f"--n-steps must be >= 1000, got {args.n_steps}")
    version = systems.dysts.dysts_version()
    names = args.names or (QUICK_NAMES if args.quick else systems.dysts_names(supported_only=True))
    n_steps = 40_000 if args.quick else args.n_steps
    rows = run(names, n_steps, args.step_factor)
    command = "python examples/dysts_lyapunov.py" + (" --quick" if args.quick else "")
    if args.names:
        command += " --names " + " ".join(args.names)
    if args.n_steps != N_STEPS:
        command += f" --n-steps {args.n_steps}"
    if args.step_factor != STEP_FACTOR:
        command += f" --step-factor {args.step_factor:g}"
    text = table(rows, version, command, args.step_factor)
    print(text)
    # only the full default run is stored
    if not (args.quick or args.names or args.step_factor != STEP_FACTOR):
        write_into(args.doc, text)
        atomic_write_bytes(
            args.json,
            json.dumps({"dysts": version, "n_steps": n_steps, "rows": rows}, indent=1).encode(),
        )
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
