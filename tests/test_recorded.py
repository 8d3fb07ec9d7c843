"""Runs recorded by earlier pgjax versions still reproduce bitwise.

tests/data/recorded*/ hold config.json and metrics.csv of small runs made by `pgjax train` at
commit 0d0dffd (before components, observation shapes and the `network` field existed): a
CartPole value-baseline run, a Breakout-MinAtar run (flattened frames) and a Pendulum run
(Gaussian policy). Float bits depend on the XLA build and on the CPU's instruction-set
extensions (`runs.cpu`): tests/data/recorded-avx2/ was recorded on a CPU with AVX2 and FMA but
no AVX-512 (its cpu.json), tests/data/recorded/ on the CPU pgjax was first developed on (whose
extensions were not recorded; they differ from those). The check uses the set recorded on a
CPU with this one's extensions, else tests/data/recorded/, and is skipped where jax and jaxlib
are not the recorded versions.
"""

import json
import shutil
from pathlib import Path

import pytest

import pgjax
from pgjax import runs

DATA = Path(__file__).resolve().parent / "data"


def recordings() -> Path:
    """The recorded runs made on a CPU with this one's extensions, else tests/data/recorded."""
    for folder in sorted(DATA.glob("recorded-*")):
        if json.loads((folder / "cpu.json").read_text())["isa"] == runs.cpu()["isa"]:
            return folder
    return DATA / "recorded"


@pytest.mark.parametrize("name", ["cp_value", "breakout", "pendulum"])
def test_recorded_run_reproduces_bitwise(name, tmp_path):
    recorded = recordings() / name
    record = json.loads((recorded / "config.json").read_text())
    now = runs.provenance()["versions"]
    for package in ("jax", "jaxlib"):
        if now[package] != record["versions"][package]:
            pytest.skip(f"recorded with {package} {record['versions'][package]}, "
                        f"this is {now[package]}")
    assert "network" not in record["config"] and "components" not in record
    run_dir = tmp_path / name
    shutil.copytree(recorded, run_dir)
    assert pgjax.reproduce_run(run_dir, progress=False)["difference"] is None


def test_both_sets_hold_the_same_runs():
    """The two recordings are of the same commands (only the machine differs)."""
    for name in ("cp_value", "breakout", "pendulum"):
        a, b = (json.loads((DATA / s / name / "config.json").read_text())
                for s in ("recorded", "recorded-avx2"))
        assert a["config"] == b["config"] and a["git_commit"] == b["git_commit"]
        assert (a["seeds"], a["seed"], a["chunk_updates"]) == (b["seeds"], b["seed"],
                                                               b["chunk_updates"])
