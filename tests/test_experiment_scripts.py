"""The scripts of experiments/ refuse bad options with argparse's usage error (exit 2) before
they train, play or write anything: their outputs are committed files."""

import pathlib
import runpy
import sys

import pytest

EXPERIMENTS = pathlib.Path(__file__).resolve().parent.parent / "experiments"


@pytest.mark.parametrize("script, args, message", [
    ("acrobot/stuck_seeds.py", ["--seeds", "0"], "--seeds must be positive, got 0"),
    ("minatar/plateau.py", ["{missing}"],
     "{missing}/config.json is not a readable pgjax run record"),
    ("minatar/plateau.py", ["{missing}", "--episodes", "0"], "--episodes must be positive, got 0"),
    ("derivation/run.py", ["--chunks", "0"], "--chunks must be positive, got 0"),
    ("derivation/run.py", ["--replicates", "-1"], "--replicates must be 0 or more, got -1"),
    ("estimators/run.py", ["--parts", "exakt"], "argument --parts: invalid choice: 'exakt'"),
], ids=["stuck-seeds", "plateau-run", "plateau-episodes", "chunks", "replicates", "parts"])
def test_a_bad_option_is_a_usage_error(tmp_path, monkeypatch, capsys, script, args, message):
    def refuse(path, *_, **__):
        raise AssertionError(f"wrote {path}")

    monkeypatch.setattr(pathlib.Path, "write_text", refuse)  # so no test writes a committed file
    missing = tmp_path / "missing"
    path = EXPERIMENTS / script
    monkeypatch.setattr(sys, "argv", [str(path), *(a.format(missing=missing) for a in args)])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(path), run_name="__main__")
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith(f"{path.name}: error: {message.format(missing=missing)}"), lines
