"""kill -9 during training, at random moments: every resume works, the final weights equal those of
an uninterrupted run bit for bit, and no temporary file is left.

    python tests/kill9_run.py --trials 20          # about 20 x (start-up + training) seconds

Each trial starts a training process (``fit`` with a ``checkpoint_dir``), kills it with SIGKILL at a
random moment during training, starts it again (it resumes from the last checkpoint), possibly kills
it again, and lets the last start finish. Not part of the test suite (slow); prints the counts.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 8


def worker(folder: str) -> None:
    """One training process: fit into ``folder`` (resuming), then save the model there."""
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(1)
    import systems
    from dynfit.train import fit

    data = systems.simulate("lorenz63", n_traj=2, n_steps=120, dt=0.01, seed=3, transient=2.0)
    print("start", flush=True)
    sur, _ = fit(data, field={"kind": "mlp", "width": 16, "depth": 2}, epochs=EPOCHS, seed=0,
                 lbfgs_iterations=3, checkpoint_dir=folder, progress=False)
    sur.save(Path(folder) / "model.pt")
    print("done", flush=True)


def _start(folder: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--worker", str(folder)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _wait_start(proc: subprocess.Popen) -> float:
    line = proc.stdout.readline()
    if line.strip() != "start":
        raise RuntimeError(f"worker failed to start: {line!r} {proc.stderr.read()[-2000:]}")
    return time.perf_counter()


def _weights(folder: Path):
    import torch

    blob = torch.load(folder / "model.pt", weights_only=True)
    return blob["state_dict"]


def _leftovers(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return [
        p.name for p in folder.iterdir() if p.name.startswith(".dynfit-tmp-") or ".tmp" in p.name
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    import torch

    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="dynfit-kill9-") as tmp:
        tmp = Path(tmp)
        ref = tmp / "reference"
        proc = _start(ref)
        t0 = _wait_start(proc)
        out, err = proc.communicate()
        if proc.returncode != 0:
            print(err[-3000:])
            return 1
        train_s = time.perf_counter() - t0
        reference = _weights(ref)
        print(f"uninterrupted run: {train_s:.1f} s of training, {EPOCHS} epochs")
        counts = {"trials": 0, "kills": 0, "kills_before_end": 0, "resumes_ok": 0,
                  "resume_failures": 0, "identical": 0, "different": 0, "temp_files_left": 0,
                  "temps_seen_after_kill": 0}
        for trial in range(args.trials):
            folder = tmp / f"trial{trial:02d}"
            n_kills = rng.choice([1, 1, 2])
            ok = True
            for _ in range(n_kills):
                proc = _start(folder)
                _wait_start(proc)
                time.sleep(rng.uniform(0.0, train_s))
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGKILL)
                    counts["kills_before_end"] += 1
                proc.wait()
                proc.stdout.close()
                proc.stderr.close()
                counts["kills"] += 1
                counts["temps_seen_after_kill"] += bool(_leftovers(folder))
            proc = _start(folder)
            try:
                _wait_start(proc)
                out, err = proc.communicate(timeout=600)
            except Exception as exc:  # noqa: BLE001
                out, err = "", str(exc)
            if proc.returncode != 0 or "done" not in out:
                counts["resume_failures"] += 1
                print(
                    f"trial {trial}: resume failed: "
                    f"{err.strip().splitlines()[-1:] if err else proc.returncode}"
                )
                ok = False
            else:
                counts["resumes_ok"] += 1
            if ok:
                same = all(torch.equal(reference[k], v) for k, v in _weights(folder).items())
                counts["identical" if same else "different"] += 1
            left = _leftovers(folder)
            counts["temp_files_left"] += bool(left)
            counts["trials"] += 1
            print(
                f"trial {trial}: {n_kills} kill(s); resume {'ok' if ok else 'FAILED'}; "
                f"weights {'identical' if ok and same else 'DIFFERENT' if ok else '-'}; "
                f"temps left {left}",
                flush=True,
            )
        print(counts)
        bad = counts["resume_failures"] + counts["different"] + counts["temp_files_left"]
        return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
