"""The worked example of docs/solvers.md runs, and the benchmark runs in its quick mode."""
import contextlib
import io
import pathlib
import re
import runpy

import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_docs_worked_example_runs():
    torch.set_num_threads(1)
    text = (ROOT / "docs" / "solvers.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    example = blocks[-1]
    assert "odesolve" in example
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(example, "docs/solvers.md", "exec"), {})
    assert "MAX_STEPS" in out.getvalue() and "Dimensions" in out.getvalue()


def test_benchmark_quick_mode_runs():
    torch.set_num_threads(1)
    bench = runpy.run_path(str(ROOT / "benchmarks" / "bench_solvers.py"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        results = bench["main"](["--quick", "--methods", "rkf45"])
    assert ("rkf45", 1e-4, "dynfit") in results and "dynfit/torchdiffeq" in out.getvalue()


def test_controller_benchmark_quick_mode_runs():
    """benchmarks/bench_controllers.py (PI against I) runs in its quick mode."""
    bench = runpy.run_path(str(ROOT / "benchmarks" / "bench_controllers.py"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        results = bench["main"](["--quick", "--t-vdp", "4", "--t-lorenz", "2"])
    assert len(results) == 2 and "PI / I" in out.getvalue()
    for row in results.values():
        assert set(row) == {"I (MixedNorm)", "PI (0.7, 0.4)"}


def test_inference_benchmark_runs():
    """benchmarks/bench_inference.py runs end to end in a small mode (numbers are not asserted)."""
    torch.set_num_threads(1)
    bench = runpy.run_path(str(ROOT / "benchmarks" / "bench_inference.py"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ratios = bench["main"](["--samples", "3", "--repeats", "1", "--batches", "1", "2"])
    assert set(ratios) >= {1, 2} and "dynfit/torchdiffeq" in out.getvalue()
