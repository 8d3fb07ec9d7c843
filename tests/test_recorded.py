"""Runs recorded by earlier pgjax versions still reproduce bitwise.

tests/data/recorded/ holds config.json and metrics.csv of small runs made by `pgjax train` at
commit 0d0dffd (before components, observation shapes and the `network` field existed): a
CartPole value-baseline run, a Breakout-MinAtar run (flattened frames) and a Pendulum run
(Gaussian policy). Float bits depend on the XLA build, so the check runs where jax and jaxlib
are the recorded versions and is skipped elsewhere.
"""

import json
import shutil
from pathlib import Path

import pytest

import pgjax
from pgjax import runs

RECORDED = Path(__file__).resolve().parent / "data" / "recorded"


@pytest.mark.parametrize("name", ["cp_value", "breakout", "pendulum"])
def test_recorded_run_reproduces_bitwise(name, tmp_path):
    record = json.loads((RECORDED / name / "config.json").read_text())
    now = runs.provenance()["versions"]
    for package in ("jax", "jaxlib"):
        if now[package] != record["versions"][package]:
            pytest.skip(f"recorded with {package} {record['versions'][package]}, "
                        f"this is {now[package]}")
    assert "network" not in record["config"] and "components" not in record
    run_dir = tmp_path / name
    shutil.copytree(RECORDED / name, run_dir)
    assert pgjax.reproduce_run(run_dir, progress=False)["difference"] is None
