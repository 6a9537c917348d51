"""docs/getting_started.md, "From your own data": its Python, TOML and dynfit commands run
as written."""

import re
import shlex
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "getting_started.md"
SECTION = PAGE.read_text().split("## From your own data", 1)[1].split("\n## ", 1)[0]
BLOCKS = re.findall(r"```(python|toml|bash)\n(.*?)```", SECTION, flags=re.S)


def test_section_has_code():
    kinds = [k for k, _ in BLOCKS]
    assert kinds.count("python") >= 4 and "toml" in kinds and "bash" in kinds


@pytest.mark.slow
def test_from_your_own_data_runs(tmp_path, monkeypatch, capsys):
    """Every block in order, in one namespace, in an empty folder (the page's tiny sizes: ~40 s)."""
    import torch

    from dynfit.cli import main

    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__getting_started__"}
    for i, (kind, code) in enumerate(BLOCKS):
        if kind == "python":
            exec(compile(code, f"getting_started.md[block {i}]", "exec"), namespace)
        elif kind == "toml":
            name = code.splitlines()[0].lstrip("# ").strip()
            (tmp_path / name).write_text(code)
        else:
            for line in filter(None, (ln.strip() for ln in code.splitlines())):
                argv = shlex.split(line)
                assert argv[0] == "dynfit", line
                if argv[1:] == ["--version"]:
                    with pytest.raises(SystemExit):
                        main(argv[1:])
                else:
                    assert main(argv[1:]) == 0, line
    ds = namespace["ds"]
    assert ds.attrs["lyapunov_time_source"] == "estimated from data"
    assert "vpt_capped" in ds and namespace["fc"].sizes["time"] == 300
    assert list(namespace["from_csv"]["component"].values) == ["x", "y", "z"]
    for name in (
        "model.pt",
        "history.nc",
        "training.png",
        "held_out.nc",
        "diagnostics.nc",
        "density.png",
    ):
        assert (tmp_path / "trained" / name).is_file(), name
    assert (tmp_path / "evaluation" / "diagnostics.nc").is_file()
    assert "dynfit" in capsys.readouterr().out
