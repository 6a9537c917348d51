"""House style, checked: no line over 100 characters in the files listed in ``CLEAN``.

A file joins ``CLEAN`` (one path a line, relative to the repository root) once it is within
the limit: ``python tests/test_style.py`` prints the files that are clean but not yet listed
and those still over the limit with their counts; ``python tests/test_style.py --add`` adds
every clean file git tracks to the list.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINE = 100
PACKAGES = ("_dyncore", "systems", "dynfit", "tests", "examples", "benchmarks")

# Files within the limit; keep this list sorted, one path a line.
CLEAN = """
_dyncore/__init__.py
_dyncore/checks.py
_dyncore/stats.py
_dyncore/status.py
_dyncore/tableaus.py
benchmarks/bench_calls.py
benchmarks/bench_controllers.py
benchmarks/bench_dysts.py
benchmarks/bench_gpu.py
benchmarks/bench_inference.py
benchmarks/bench_library.py
benchmarks/bench_peers_lorenz.py
benchmarks/bench_prefit_order.py
benchmarks/bench_solvers.py
benchmarks/bench_systems.py
benchmarks/bench_tabn.py
benchmarks/bench_training.py
dynfit/__init__.py
dynfit/__main__.py
dynfit/_demo.py
dynfit/_history.py
dynfit/_settings.py
dynfit/_threads.py
dynfit/_version.py
dynfit/_watch.py
dynfit/benchmark/__init__.py
dynfit/benchmark/_child.py
dynfit/benchmark/_digest.py
dynfit/benchmark/cli.py
dynfit/benchmark/methods.py
dynfit/benchmark/protocols.py
dynfit/benchmark/results.py
dynfit/benchmark/runner.py
dynfit/benchmark/scores.py
dynfit/cli.py
dynfit/compare.py
dynfit/config.py
dynfit/data.py
dynfit/diagnostics/__init__.py
dynfit/diagnostics/_checks.py
dynfit/diagnostics/dimension.py
dynfit/diagnostics/evaluate.py
dynfit/diagnostics/lyapunov.py
dynfit/diagnostics/measure.py
dynfit/diagnostics/reference.py
dynfit/diagnostics/spectrum.py
dynfit/diagnostics/vpt.py
dynfit/distributed.py
dynfit/embedding.py
dynfit/equations.py
dynfit/estimator.py
dynfit/forecast.py
dynfit/inference.py
dynfit/io.py
dynfit/nn/__init__.py
dynfit/nn/_grid.py
dynfit/nn/_norm_checks.py
dynfit/nn/baseline_norms.py
dynfit/nn/calls.py
dynfit/nn/fields.py
dynfit/nn/fourier.py
dynfit/nn/library.py
dynfit/nn/norm.py
dynfit/nn/registry.py
dynfit/nn/running_stats.py
dynfit/nn/tabn.py
dynfit/nn/tabn_tables.py
dynfit/plot.py
dynfit/prefit.py
dynfit/selection.py
dynfit/shooting.py
dynfit/smoothing.py
dynfit/solvers/__init__.py
dynfit/solvers/control.py
dynfit/solvers/integrate.py
dynfit/solvers/pi.py
dynfit/solvers/solution.py
dynfit/solvers/stepper.py
dynfit/solvers/tableau.py
dynfit/solvers/torchdiffeq.py
dynfit/strategies.py
dynfit/surrogate.py
dynfit/sweep.py
dynfit/tables.py
dynfit/train.py
dynfit/weakform.py
examples/compare_strategies.py
examples/continuous_surrogates.py
examples/dysts_lyapunov.py
examples/lorenz_strategies.py
examples/reproduce_allauzen2022.py
examples/tabn_depth.py
examples/tabn_models.py
systems/__init__.py
systems/_version.py
systems/catalogue.py
systems/checks.py
systems/dataset.py
systems/dysts.py
systems/files.py
systems/integrate.py
systems/kernels.py
systems/lyapunov.py
systems/simulate.py
systems/stats.py
systems/status.py
systems/system.py
systems/tableaus.py
tests/dynfit/conftest.py
tests/dynfit/test_benchmark.py
tests/dynfit/test_benchmark_methods.py
tests/dynfit/test_cli.py
tests/dynfit/test_commands.py
tests/dynfit/test_compare.py
tests/dynfit/test_continuous.py
tests/dynfit/test_data.py
tests/dynfit/test_diagnostics_core.py
tests/dynfit/test_diagnostics_evaluate.py
tests/dynfit/test_diagnostics_measure.py
tests/dynfit/test_distributed.py
tests/dynfit/test_embedding.py
tests/dynfit/test_equations.py
tests/dynfit/test_estimator.py
tests/dynfit/test_examples.py
tests/dynfit/test_fields.py
tests/dynfit/test_files_share.py
tests/dynfit/test_forecast.py
tests/dynfit/test_fourier_field.py
tests/dynfit/test_io.py
tests/dynfit/test_library.py
tests/dynfit/test_norm.py
tests/dynfit/test_plot.py
tests/dynfit/test_schedule.py
tests/dynfit/test_shooting.py
tests/dynfit/test_solvers.py
tests/dynfit/test_solvers_control.py
tests/dynfit/test_solvers_docs.py
tests/dynfit/test_solvers_numerics.py
tests/dynfit/test_surrogate.py
tests/dynfit/test_sweep.py
tests/dynfit/test_tabn_study.py
tests/dynfit/test_train.py
tests/dynfit/test_weakform.py
tests/fuzz_run.py
tests/kill9_run.py
tests/systems/conftest.py
tests/systems/test_catalogue.py
tests/systems/test_checks.py
tests/systems/test_chunks.py
tests/systems/test_dataset.py
tests/systems/test_dataset_cf.py
tests/systems/test_dysts.py
tests/systems/test_integrate.py
tests/systems/test_kernels.py
tests/systems/test_lyapunov.py
tests/systems/test_reference_exponents.py
tests/systems/test_simulate.py
tests/systems/test_starts.py
tests/systems/test_threads.py
tests/test_api.py
tests/test_fuzz.py
tests/test_getting_started.py
tests/test_import_without_numba.py
tests/test_imports.py
tests/test_properties.py
tests/test_readme.py
tests/test_style.py
""".split()


def long_lines(path: Path) -> list[tuple[int, int]]:
    """(line number, length) of every line of ``path`` longer than MAX_LINE characters."""
    text = path.read_text(encoding="utf-8")
    return [(i, len(line)) for i, line in enumerate(text.splitlines(), 1) if len(line) > MAX_LINE]


def python_files() -> list[str]:
    """Every .py file of the packages, tests, examples and benchmarks, relative to ROOT."""
    files = (p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))
    return sorted(str(p.relative_to(ROOT)) for p in files if "__pycache__" not in p.parts)


def test_clean_list_is_sorted_without_repeats():
    assert CLEAN == sorted(set(CLEAN)), "keep CLEAN sorted, one path a line, no repeats"


@pytest.mark.parametrize("name", CLEAN)
def test_no_line_over_the_limit(name):
    path = ROOT / name
    assert path.is_file(), f"{name} is listed in CLEAN but does not exist: remove it from the list"
    bad = long_lines(path)
    assert not bad, f"{name}: lines over {MAX_LINE} characters (line, length): {bad}"


def test_long_lines_finds_them(tmp_path):
    path = tmp_path / "x.py"
    path.write_text("a = 1\n" + "#" * MAX_LINE + "\n" + "b" * (MAX_LINE + 1) + "\n")
    assert long_lines(path) == [(3, MAX_LINE + 1)]


def _add_clean_files() -> list[str]:
    """Rewrite CLEAN in this file with every file git tracks that is clean (in the work tree and
    as committed) added; returns the added."""
    import os
    import subprocess
    import tempfile

    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout

    def committed_clean(name):  # HEAD's copy too: CI tests what is committed
        return all(len(line) <= MAX_LINE for line in git("show", f"HEAD:{name}").splitlines())

    tracked = set(git("ls-files", "*.py").split())
    added = [f for f in python_files() if f in tracked and f not in CLEAN
             and not long_lines(ROOT / f) and committed_clean(f)]
    me = Path(__file__).resolve()
    text = me.read_text(encoding="utf-8")
    start = text.index('CLEAN = """\n') + len('CLEAN = """\n')
    end = text.index('""".split()', start)
    text = text[:start] + "".join(f"{f}\n" for f in sorted(set(CLEAN) | set(added))) + text[end:]
    fd, tmp = tempfile.mkstemp(dir=me.parent, prefix=".test_style-", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(tmp, me)
    return added


if __name__ == "__main__":
    if sys.argv[1:] == ["--add"]:
        print("added to CLEAN:\n" + ("\n".join(_add_clean_files()) or "(none)"))
        raise SystemExit(0)
    listed = set(CLEAN)
    over = {f: len(long_lines(ROOT / f)) for f in python_files()}
    print("clean, not yet in CLEAN (--add adds those git tracks):")
    print("\n".join(f for f, n in over.items() if n == 0 and f not in listed) or "  (none)")
    print("over the limit:")
    print("\n".join(f"{n:5d} {f}" for f, n in sorted(over.items(), key=lambda x: -x[1]) if n))
