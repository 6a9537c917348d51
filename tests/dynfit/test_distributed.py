"""Data-parallel training under torchrun (2 gloo processes on the CPU) against one process."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TORCHRUN = Path(sys.executable).with_name("torchrun")
pytestmark = pytest.mark.skipif(not TORCHRUN.exists() or not torch.distributed.is_available(),
                                reason="torchrun / torch.distributed not available")

CONFIG = """[data]
system = "lorenz63"
n_traj = 3
n_steps = {n_steps}
split_fraction = 0.67
[field]
kind = "mlp"
width = 8
activation = "tanh"
[strategy]
name = "fehlberg"
[train]
epochs = {epochs}
lbfgs_iterations = 5
"""


def _train(cfg, out, *, processes=1):
    """``dynfit train cfg --out out``, in one process or under torchrun with ``processes``."""
    launch = ([str(TORCHRUN), "--standalone", "--nproc-per-node", str(processes)]
              if processes > 1 else [sys.executable])
    args = launch + ["-m", "dynfit", "train", str(cfg), "--out", str(out), "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(args, cwd=out.parent, env=env, capture_output=True, text=True,
                          timeout=600)


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def test_two_processes_equal_one_and_resume_with_another_count(tmp_path):
    import xarray as xr

    cfg = tmp_path / "run.toml"
    cfg.write_text(CONFIG.format(n_steps=120, epochs=3))
    two = _train(cfg, tmp_path / "two", processes=2)
    assert two.returncode == 0, two.stderr[-2000:]
    one = _train(cfg, tmp_path / "one")
    assert one.returncode == 0, one.stderr[-2000:]
    a, b = _weights(tmp_path / "one" / "model.pt"), _weights(tmp_path / "two" / "model.pt")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-8
    hist = xr.load_dataset(tmp_path / "two" / "history.nc")
    assert hist.attrs["world_size"] == 2 and hist.sizes["epoch"] == 3
    # a 2-process checkpoint continued by 1 process
    shutil.copytree(tmp_path / "two", tmp_path / "resume")
    cfg.write_text(CONFIG.format(n_steps=120, epochs=4))
    more = _train(cfg, tmp_path / "resume")
    assert more.returncode == 0, more.stderr[-2000:]
    hist = xr.load_dataset(tmp_path / "resume" / "history.nc")
    assert hist.sizes["epoch"] == 4 and hist.attrs["world_size"] == 1
    assert (
        hist.loss.values[:3].tolist()
        == xr.load_dataset(tmp_path / "two" / "history.nc").loss.values.tolist()
    )


def test_more_processes_than_windows_is_refused(tmp_path):
    cfg = tmp_path / "run.toml"
    # one training trajectory of 3 samples, windows of 2 steps: one window for two processes
    cfg.write_text(
        CONFIG.format(n_steps=3, epochs=1)
        .replace("n_traj = 3", "n_traj = 2")
        .replace("split_fraction = 0.67", "split_fraction = 0.5\nhorizon = 2\nstride = 2")
    )
    res = _train(cfg, tmp_path / "out", processes=2)
    assert res.returncode != 0
    assert "processes but only" in res.stderr and "training windows" in res.stderr
