"""Every committed experiment file still parses into valid configs: the TOML files that
scripts/reproduce.py reads (each variant) and the sweep specs of experiments/sweeps."""

import runpy
from pathlib import Path

import pytest

from pgjax.sweep import spec as sweep_spec

ROOT = Path(__file__).resolve().parent.parent
REPRODUCE = runpy.run_path(str(ROOT / "scripts" / "reproduce.py"))
TOMLS = sorted((ROOT / "experiments").glob("*/*.toml"))
SPECS = sorted((ROOT / "experiments" / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", TOMLS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_experiment_toml_variants_are_valid_configs(path):
    variants, _ = REPRODUCE["load"](path)
    names = [name for name, _ in variants]
    assert names and len(set(names)) == len(names)  # --variants selects by name
    assert len({REPRODUCE["slug"](name) for name in names}) == len(names)  # run directories


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_sweep_specs_plan(path):
    assert sweep_spec.make_plan(sweep_spec.parse_spec(path)).configs


@pytest.mark.parametrize("table, partial, expected", [
    ("results.md", False, "spaceinvaders"),
    ("results.md", True, "spaceinvaders-partial"),
    ("results-spaceinvaders.md", True, "spaceinvaders-partial"),
    ("results-spaceinvaders-ent0.03.md", True, "spaceinvaders-ent0.03-partial"),
    ("results-partial.md", True, "spaceinvaders-partial"),
    ("t.md", True, "spaceinvaders-t-partial"),
])
def test_each_table_has_figures_of_its_own(table, partial, expected):
    # A second study of one config writes its table and figure beside the first, not over it.
    assert REPRODUCE["figure_name"]("spaceinvaders", Path(table), partial) == expected
