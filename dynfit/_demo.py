"""The systems side of ``dynfit demo``: Lorenz'63 trajectories as netCDF, a 3-D figure of
them and the true Lyapunov spectrum (the demo itself: :func:`dynfit.cli.demo`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_trajectories_3d(ds, path: Path) -> Path:
    """3-D line plot of every trajectory of a systems Dataset ``ds`` (its first three
    components, x (trajectory, time, component)) to the PNG ``path``, written atomically."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    from .io import save_figure

    names = [str(c) for c in ds["component"].values[:3]]
    fig = Figure(figsize=(7, 6), dpi=120)
    ax = fig.add_subplot(projection="3d")
    colors = colormaps["viridis"](np.linspace(0.1, 0.9, ds.sizes["trajectory"]))
    for i, color in enumerate(colors):
        x = ds["x"].isel(trajectory=i).values
        ax.plot(x[:, 0], x[:, 1], x[:, 2], lw=0.35, color=color, label=f"trajectory {i}")
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.set_zlabel(names[2])
    a = ds.attrs
    ax.set_title(
        f"{a['system']}: {ds.sizes['trajectory']} trajectories x {ds.sizes['time']} samples, "
        f"dt={a['dt']:g}\n{a['method']} rtol={a['rtol']:g} atol={a['atol']:g}, seed {a['seed']}",
        fontsize=9,
    )
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def demo_data(out: Path, *, n_traj: int = 4, n_steps: int = 5000, seed: int = 0) -> dict:
    """Simulate Lorenz'63, write ``out/lorenz63.nc`` and ``out/lorenz63_attractor.png``.

    Returns {"netcdf", "figure": paths, "dataset", "lyapunov": the spectrum (3,),
    "kaplan_yorke": its dimension}.
    """
    import systems

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ds = systems.simulate("lorenz63", n_traj=n_traj, n_steps=n_steps, dt=0.01, seed=seed)
    nc = systems.save(ds, out / "lorenz63.nc")
    png = plot_trajectories_3d(ds, out / "lorenz63_attractor.png")
    lam = systems.lyapunov_spectrum("lorenz63", n_steps=100_000)
    dky = systems.kaplan_yorke_dimension(lam)
    print(f"wrote {nc} ({n_traj} trajectories x {n_steps} samples of Lorenz'63, dt=0.01, "
          f"seed {seed})")
    print(f"wrote {png}")
    print(f"Lyapunov spectrum {np.round(lam, 4).tolist()} (reference 0.9056, 0, -14.5723), "
          f"Kaplan-Yorke {dky:.3f}")
    return {"netcdf": nc, "figure": png, "dataset": ds, "lyapunov": lam, "kaplan_yorke": dky}
