"""A simulation keeps the user's OpenMP thread limit for torch (numba's OpenMP layer shares it)."""
import os
import subprocess
import sys

_SCRIPT = """
import torch, systems
systems.simulate("lorenz63", n_traj=2, n_steps=20, dt=0.01, seed=0)
print(torch.get_num_threads())
"""


def test_omp_num_threads_still_holds_for_torch_after_a_simulation():
    # (a numba imported before systems keeps its own count: docs/systems.md, "Threads")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"}
    env["OMP_NUM_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "1"
