"""scripts/reproduce.py: variants of a config file, --variants and --only, reuse of finished runs
and continuation of unfinished ones."""

import json
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pgjax import Config, records
from pgjax.experiment import compare_metrics, same_run, train_run

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "reproduce.py"
TOML = """env = "CartPole-v1"
num_envs = 4
num_steps = 10
total_timesteps = 120
default_variants = false

[[variant]]
name = "lr small"
lr = 0.001

[[variant]]
name = "lr large"
lr = 0.01

[reference]
threshold = 475.0
source = "test"
"""


def argv(tmp_path, *args) -> list[str]:
    """reproduce.py's command line on tmp_path's configs, runs and table, 2 seeds."""
    return [str(SCRIPT), "--configs", str(tmp_path / "configs"), "--seeds", "2",
            "--runs", str(tmp_path / "runs"), "--table", str(tmp_path / "t.md"), *args]


def reproduce(tmp_path, *args):
    return subprocess.run([sys.executable, *argv(tmp_path, *args)], capture_output=True,
                          text=True, timeout=600)


@pytest.fixture
def configs(tmp_path):
    """tmp_path/configs/tiny.toml holding TOML."""
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tiny.toml").write_text(TOML)
    return tmp_path / "configs"


@pytest.mark.slow
@pytest.mark.usefixtures("configs")
def test_variants_filter_partial_table_and_reuse(tmp_path):
    bad = reproduce(tmp_path, "--variants", "lr medium")
    assert bad.returncode == 2 and "no variant named lr medium" in bad.stderr
    bad = reproduce(tmp_path, "--only", "tiny", "huge")
    assert bad.returncode == 2 and "no config named huge" in bad.stderr
    assert "(there: tiny)" in bad.stderr
    # CONFIG:NAME selects the variant in that config only: other.toml has the same names.
    (tmp_path / "configs" / "other.toml").write_text(TOML)
    bad = reproduce(tmp_path, "--variants", "tiny:lr medium", "nowhere:lr large")
    assert bad.returncode == 2 and "no variant named nowhere:lr large, tiny:lr medium" in bad.stderr
    one = reproduce(tmp_path, "--variants", "tiny:lr large")
    assert one.returncode == 0, one.stderr
    assert not (tmp_path / "runs" / "other-lr-large").exists()
    (tmp_path / "configs" / "other.toml").unlink()
    rows = [line for line in (tmp_path / "t-partial.md").read_text().splitlines()
            if line.startswith("| CartPole-v1")]
    assert len(rows) == 1 and "| lr large |" in rows[0]
    assert '--variants "tiny:lr large"' in (tmp_path / "t-partial.md").read_text()
    assert not (tmp_path / "t.md").exists()
    assert (tmp_path / "figures" / "tiny-t-partial.png").exists()  # table t.md
    assert not (tmp_path / "runs" / "tiny-lr-small").exists()
    both = reproduce(tmp_path)  # "lr large" is reused, "lr small" trained
    assert both.returncode == 0, both.stderr
    assert both.stdout.count("[tiny: ") == 1 and "[tiny: lr small]" in both.stdout
    rows = [line for line in (tmp_path / "t.md").read_text().splitlines()
            if line.startswith("| CartPole-v1")]
    assert [r.split(" | ")[2] for r in rows] == ["lr small", "lr large"]

    run = tmp_path / "runs" / "tiny-lr-large"
    config = Config(env="CartPole-v1", num_envs=4, num_steps=10, total_timesteps=120, lr=0.01)
    assert (run / "summary.json").exists() and same_run(run, config, 2)
    assert same_run(run, config.replace(clip="global"), 2)  # no value net: same run
    assert same_run(run, config.replace(conv_impl="lax"), 2)  # no convolution
    assert not same_run(run, config.replace(lr=0.02), 2)
    assert not same_run(run, config, 3)
    assert not same_run(tmp_path / "runs" / "missing", config, 2)

    summary = (run / "summary.json").read_text()
    cheap = reproduce(tmp_path, "--variants", "lr large", "--budget", "80")
    assert cheap.returncode == 0, cheap.stderr
    assert same_run(tmp_path / "runs" / "tiny-lr-large-budget-80",
                    config.replace(total_timesteps=80), 2)
    assert (run / "summary.json").read_text() == summary and same_run(run, config, 2)


@pytest.mark.slow
@pytest.mark.usefixtures("configs")
def test_eval_columns_evaluate_each_final_policy_once(tmp_path):
    bad = reproduce(tmp_path, "--eval", "0")
    assert bad.returncode == 2 and "--eval must be positive" in bad.stderr
    first = reproduce(tmp_path, "--variants", "lr large", "--eval", "3")
    assert first.returncode == 0, first.stderr
    text = (tmp_path / "t-partial.md").read_text()
    assert "--eval 3" in text and "greedy eval IQM" in text
    result = json.loads((tmp_path / "runs" / "tiny-lr-large" / "eval.json").read_text())
    assert (result["checkpoint_update"], result["episodes"]) == (3, 3)
    row = next(line for line in text.splitlines() if line.startswith("| CartPole-v1"))
    assert row.endswith(f"{result['greedy']['iqm']:.2f} [{result['greedy']['ci95'][0]:.2f}, "
                        f"{result['greedy']['ci95'][1]:.2f}] | "
                        f"{result['sampled']['iqm']:.2f} [{result['sampled']['ci95'][0]:.2f}, "
                        f"{result['sampled']['ci95'][1]:.2f}] |")
    # Rerun: the run and its evaluation are reused (eval.json untouched).
    mtime = (tmp_path / "runs" / "tiny-lr-large" / "eval.json").stat().st_mtime_ns
    again = reproduce(tmp_path, "--only", "tiny", "--variants", "lr large", "--eval", "3")
    assert again.returncode == 0, again.stderr
    # The table's header holds the command as it was run.
    assert f'--seeds 2 --only tiny --runs {tmp_path / "runs"} --configs' in \
        (tmp_path / "t-partial.md").read_text()
    assert (tmp_path / "runs" / "tiny-lr-large" / "eval.json").stat().st_mtime_ns == mtime
    assert (tmp_path / "t-partial.md").read_text().splitlines()[4:] == text.splitlines()[4:]
    # A finished run without its evaluation and without checkpoints: a dash, not a crash.
    (tmp_path / "runs" / "tiny-lr-large" / "eval.json").unlink()
    shutil.rmtree(tmp_path / "runs" / "tiny-lr-large" / "checkpoints")
    # (and a table in a directory that does not exist yet: created, figures beside it)
    nested = tmp_path / "new" / "t.md"
    gone = reproduce(tmp_path, "--variants", "lr large", "--eval", "3", "--table", str(nested))
    assert gone.returncode == 0, gone.stderr
    assert "tiny-lr-large: not evaluated" in gone.stdout
    assert (tmp_path / "new" / "figures" / "tiny-t-partial.png").exists()
    row = next(line for line in (tmp_path / "new" / "t-partial.md").read_text().splitlines()
               if line.startswith("| CartPole-v1"))
    assert row.endswith(" — | — |")


def reproduce_here(tmp_path, monkeypatch, *args):
    """reproduce.py run in this process (no interpreter and JAX start-up): its exit code."""
    monkeypatch.setattr(sys, "argv", argv(tmp_path, *args))
    try:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    except SystemExit as e:
        if isinstance(e.code, int):  # argparse's usage error: 2
            return e.code
        print(e.code, file=sys.stderr)
        return 1
    return 0


@pytest.mark.slow
@pytest.mark.usefixtures("configs")
def test_an_interrupted_run_continues_from_its_checkpoint(tmp_path, monkeypatch, capsys):
    config = Config(env="CartPole-v1", num_envs=4, num_steps=10, total_timesteps=120, lr=0.01)
    run = tmp_path / "runs" / "tiny-lr-large"
    train_run(config, run, seeds=2, chunks=3, checkpoint_every=1, progress=False)
    shutil.copytree(run, tmp_path / "uninterrupted")
    # As a process killed in its last chunk leaves it: no summary, no final checkpoint.
    (run / "summary.json").unlink()
    shutil.rmtree(run / "checkpoints" / "3")
    # A directory that is not a run is not replaced: one line, exit 1, the file kept.
    other = tmp_path / "runs" / "tiny-lr-small"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert reproduce_here(tmp_path, monkeypatch) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"reproduce.py: [tiny: lr small] --out {other} exists and is not a pgjax run directory"]
    assert (other / "notes.txt").read_text() == "mine"
    (other / "notes.txt").unlink()
    # A config.json edited after training is not replaced: one line, exit 1, the file kept.
    record = json.loads((run / "config.json").read_text())
    record["config"]["lr"] = 0.02
    (other / "config.json").write_text(json.dumps(record))
    assert reproduce_here(tmp_path, monkeypatch) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"reproduce.py: [tiny: lr small] {other}/config.json: its config was "
                           "edited after the run was recorded"), line
    assert json.loads((other / "config.json").read_text()) == record
    # A run of another config is replaced by a new run.
    record["config_sha256"] = records.digest(record["config"])
    (other / "config.json").write_text(json.dumps(record))
    assert reproduce_here(tmp_path, monkeypatch) == 0
    out = capsys.readouterr().out
    assert "[tiny: lr large] resumed" in out and "[tiny: lr small] trained" in out
    assert compare_metrics(run, tmp_path / "uninterrupted") is None
    assert json.loads((run / "summary.json").read_text())["resumed_from_update"] == 2
    row = next(line for line in (tmp_path / "t.md").read_text().splitlines()
               if "| lr large |" in line)
    assert ", from update 2 |" in row
    small = tmp_path / "runs" / "tiny-lr-small"
    assert (small / "summary.json").exists() and same_run(small, config.replace(lr=0.001), 2)
    (aside,) = (tmp_path / "runs").glob("tiny-lr-small.replaced-*")  # the other run, kept
    assert json.loads((aside / "config.json").read_text()) == record


@pytest.mark.parametrize("text, message", [
    ("env = \n", "bad.toml is not valid TOML (Invalid value"),
    ("env = \"CartPole-v1\"\nlr = \"fast\"\n", "bad.toml: "),
    ("env = \"CartPole-v1\"\n[[variant]]\nlr = 0.1\n", "bad.toml: a [[variant]] without a name"),
    ("variant = 5\n", "bad.toml: variant must be [[variant]] tables, got 5"),
    ("[[variant]]\nname = 5\n", "bad.toml: a [[variant]] without a name (a string), got 5"),
    ("reference = 5\n", "bad.toml: reference must be a [reference] table"),
    ("[reference]\nthreshold = \"high\"\n", "bad.toml: reference.threshold must be a number"),
    ("default_variants = \"no\"\n", "bad.toml: default_variants must be true or false"),
    ("default_variants = false\n", "bad.toml: no variants"),
    ("[[variant]]\nname = \"a\"\n[[variant]]\nname = \"a\"\nlr = 0.1\n",
     "bad.toml: two variants are named 'a'"),
], ids=["syntax", "mistyped", "unnamed", "variant", "name", "reference", "threshold",
        "default_variants", "no_variants", "twice"])
def test_a_bad_config_file_is_one_line(tmp_path, monkeypatch, capsys, text, message):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "bad.toml").write_text(text)
    assert reproduce_here(tmp_path, monkeypatch) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"reproduce.py: {message}"), line
    assert not (tmp_path / "runs").exists()


def test_nothing_to_run_is_a_usage_error_and_keeps_the_table(tmp_path, monkeypatch, capsys):
    (tmp_path / "t.md").write_text("the committed table\n")
    configs = tmp_path / "configs"
    assert reproduce_here(tmp_path, monkeypatch) == 2  # no such folder
    assert capsys.readouterr().err.strip() == \
        f"reproduce.py: error: no configs (*.toml) in {configs}"
    configs.mkdir()
    (configs / "notes.txt").write_text("not a config")
    assert reproduce_here(tmp_path, monkeypatch) == 2
    assert capsys.readouterr().err.strip() == \
        f"reproduce.py: error: no configs (*.toml) in {configs}"
    (configs / "tiny.toml").write_text(TOML)
    assert reproduce_here(tmp_path, monkeypatch, "--variants", "lr medium") == 2
    assert capsys.readouterr().err.strip() == \
        f"reproduce.py: error: no variant named lr medium in {configs}"
    for flag in ("--seeds", "--budget"):
        assert reproduce_here(tmp_path, monkeypatch, flag, "0") == 2
        assert capsys.readouterr().err.strip() == \
            f"reproduce.py: error: {flag} must be positive, got 0"
    assert reproduce_here(tmp_path, monkeypatch, "--seeds", "x") == 2
    assert capsys.readouterr().err.strip() == \
        "reproduce.py: error: argument --seeds: invalid int value: 'x'"
    assert (tmp_path / "t.md").read_text() == "the committed table\n"
    assert not (tmp_path / "runs").exists()


def test_an_unreadable_eval_json_is_evaluated_again(tmp_path, monkeypatch, capsys):
    evaluation = runpy.run_path(str(SCRIPT))["evaluation"]
    config = Config(env="CartPole-v1", num_envs=4, num_steps=10, total_timesteps=120)
    fresh = {"checkpoint_update": 3, "episodes": 5, "eval_seed": 0,
             "greedy": {"iqm": 1.0}, "sampled": {"iqm": 0.5}}
    evaluated = []

    def evaluate_run(run_dir, episodes, step):
        evaluated.append(step)
        return fresh

    monkeypatch.setitem(evaluation.__globals__, "evaluate_run", evaluate_run)
    path = tmp_path / "eval.json"
    path.write_text('{"checkpoint_update": 3, "epis')  # cut short
    assert evaluation(tmp_path, config, 5) == fresh
    assert capsys.readouterr().out.startswith(f"{path}: unreadable (")
    assert json.loads(path.read_text()) == fresh
    assert evaluation(tmp_path, config, 5) == fresh  # read, not evaluated again
    assert evaluated == [3]
