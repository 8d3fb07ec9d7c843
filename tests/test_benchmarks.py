"""The benchmark scripts run (at tiny sizes) and parse their variants; speed itself is measured
by running them, not here."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.run import iqm
from benchmarks.variants import parse_variant

ROOT = Path(__file__).resolve().parent.parent


def test_solve_iqm_counts_a_seed_without_episodes_as_unsolved():
    assert iqm(np.array([1.0, 2, 3, 4, 5, 6, 7, 100])) == 4.5  # the middle half: 3, 4, 5, 6
    assert iqm(np.array([np.nan, 1, 2, 3, 4, 5, 6, 7])) == 3.5  # NaN sorts lowest and is cut
    assert iqm(np.array([np.nan] * 3 + [5.0] * 5)) == -np.inf  # a NaN in the middle half


def test_parse_variant():
    assert parse_variant("base") == {}
    assert parse_variant("unroll=8,hidden=64-64,normalize_advantages=false,lr=0.1") == {
        "unroll": 8, "hidden": (64, 64), "normalize_advantages": False, "lr": 0.1}
    for bad in ("unroll", "speed=2", "normalize_advantages=maybe"):
        with pytest.raises(SystemExit):
            parse_variant(bad)


@pytest.mark.slow
def test_variants_benchmark_runs_and_records_each_variant(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.variants", "--seeds", "2", "--updates", "1",
         "--repeats", "1", "--variants", "base", "unroll=2", "--out", str(tmp_path),
         "--tag", "tiny"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    rows = json.loads((tmp_path / "tiny.json").read_text())["rows"]
    assert [(r["seeds"], r["variant"]) for r in rows] == [(2, "base"), (2, "unroll=2")]
    assert all(r["steps_per_s"] > 0 and "error" not in r for r in rows)
    assert rows[0]["ratio_to_first"] == 1.0
