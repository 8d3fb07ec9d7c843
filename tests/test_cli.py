"""`pgjax train`: an end-to-end run on a small budget, and one-line errors for bad input."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pgjax.cli import main
from pgjax.experiment import ensure_run, load_run


def metrics_without_wall(run_dir):
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    return [{k: v for k, v in r.items() if k != "wall_seconds"} for r in rows]


TINY = ["--total-timesteps", "4000", "--num-envs", "8", "--num-steps", "100", "--seeds", "2"]


def test_train_end_to_end(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "pgjax.cli", "train", *TINY, "--out", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "final return, IQM" in proc.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["num_envs"] == 8 and config["seeds"] == 2
    assert {"jax", "flax", "optax", "gymnax", "pgjax"} <= set(config["versions"])
    assert "git_commit" in config and config["devices"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env"] == "CartPole-v1" and summary["seeds"] == 2
    final = summary["final_return"]
    assert len(final["per_seed"]) == 2 and final["ci95"][0] <= final["iqm"] <= final["ci95"][1]
    for key in ("env_steps_per_second", "wall_seconds", "compile_seconds"):
        assert summary[key] > 0
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 5  # one row per update: 4000 // (8 × 100)
    assert [int(r["env_steps"]) for r in rows] == [800, 1600, 2400, 3200, 4000]
    assert {"return_mean", "return_seed0", "return_seed1", "loss", "entropy", "grad_norm"} <= set(
        rows[0]
    )
    assert (out / "curve.png").stat().st_size > 1000
    assert np.isfinite(float(rows[-1]["return_seed1"]))
    assert not (out / "metrics.jsonl").exists()  # metrics.csv is the one metrics record


@pytest.mark.slow
def test_chunking_does_not_change_results(tmp_path):
    for chunks in (1, 5):
        main(["train", *TINY, "--out", str(tmp_path / str(chunks)), "--chunks", str(chunks),
              "--no-progress"])
    one, five = (metrics_without_wall(tmp_path / c) for c in ("1", "5"))
    assert one == five and len(one) == 5


@pytest.mark.parametrize(
    "args, message",
    [
        (["--env", "CartPol"], "unknown env 'CartPol'; did you mean CartPole-v1"),
        (["--gamma", "1.5"], "gamma must be in [0, 1]"),
        (["--gamma", "-0.1"], "gamma must be in [0, 1]"),
        (["--lr", "0"], "lr must be positive"),
        (["--lr", "-1e-3"], "lr must be positive"),
        (["--num-envs", "0"], "num_envs must be positive"),
        (["--num-steps", "-5"], "num_steps must be positive"),
        (["--seeds", "0"], "seeds must be positive"),
        (["--seed", "-1"], "seed must be an integer in [0, 2**32), got -1: it would be seed "
         "4294967295"),
        (["--seed", "4294967296"], "got 4294967296: it would be seed 0"),
        (["--total-timesteps", "100"], "smaller than one rollout"),
        (["--init-log-std", "-1"], "continuous actions only; CartPole-v1 is discrete"),
        (["--window", "bootstrap"], "needs baseline='value'"),
        (["--loss-chunks", "7"], "loss_chunks=7 must divide num_steps=500"),
        (["--loss-chunks", "0"], "loss_chunks must be positive"),
    ],
)
def test_bad_input_is_one_line(capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *args, "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("pgjax: error:"), err
    assert message in err


@pytest.mark.parametrize("argv, message", [
    (["train", "--baseline", "median"], "invalid choice 'median' for argument '--baseline'"),
    (["train", "--num-envs", "x"], "Error parsing --num-envs"),
    (["trian"], "Unrecognized options: trian"),
    (["eval"], "Missing from pgjax eval"),
])
def test_parse_errors_are_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("pgjax: error: ") and message in err, err


def test_out_that_is_not_a_run_dir(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *TINY, "--out", str(tmp_path), "--no-progress"])
    assert exit_info.value.code == 2
    assert "exists and is not a pgjax run directory" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    assert not (tmp_path / "config.json").exists()


def test_existing_run_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    main(["train", *TINY, "--out", str(out), "--no-progress"])
    before = (out / "metrics.csv").read_text()
    with pytest.raises(SystemExit):
        main(["train", *TINY, "--out", str(out), "--no-progress"])
    assert "already holds a pgjax run; pass --overwrite" in capsys.readouterr().err
    assert (out / "metrics.csv").read_text() == before
    main(["plot", str(out)])  # curves.png and .svg: files of the run
    (out / "notes.txt").write_text("mine")  # a file pgjax did not write is not deleted
    with pytest.raises(SystemExit):
        main(["train", *TINY, "--out", str(out), "--no-progress", "--overwrite"])
    assert capsys.readouterr().err.strip().endswith(
        "holds a pgjax run and files it did not write (notes.txt), which --overwrite would "
        "delete; move them first")
    (out / "notes.txt").unlink()
    main(["train", *TINY, "--out", str(out), "--no-progress", "--overwrite"])
    config, _ = load_run(out)
    record = (out / "config.json").read_text()
    (out / "config.json").write_text(record[:100])  # cut short: the run is damaged
    damaged = "a damaged pgjax run (its config.json does not read: "
    for argv in (["train", "--resume", str(out)], ["eval", str(out)], ["reproduce", str(out)],
                 ["train", *TINY, "--out", str(out), "--no-progress"]):
        with pytest.raises(SystemExit):
            main(argv)
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert damaged in line, line
    assert (out / "config.json").read_text() == record[:100]
    assert ensure_run(config, out, seeds=2)[0] == "trained"  # kept aside
    assert "held a damaged run (its config.json does not read" in capsys.readouterr().err
    (aside,) = tmp_path.glob("run.replaced-*")
    assert (aside / "config.json").read_text() == record[:100]
    (out / "config.json").write_text("[]")  # JSON, not pgjax's: another tool's, kept
    with pytest.raises(SystemExit):
        main(["train", *TINY, "--out", str(out), "--no-progress", "--overwrite"])
    assert "exists and is not a pgjax run directory" in capsys.readouterr().err
    (out / "config.json").write_text("{")
    main(["train", *TINY, "--out", str(out), "--no-progress", "--overwrite"])


@pytest.mark.slow
def test_seeds_sharded_over_devices_give_the_same_numbers(tmp_path):
    code = (
        "import jax, sys; from pgjax.cli import main; "
        "from pgjax.experiment import sharded_seed_keys as keys; "
        "assert len(keys(0, 2).sharding.device_set) == jax.device_count(); "
        "main(sys.argv[1:])"
    )
    for devices in (1, 2):
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
        proc = subprocess.run(
            [sys.executable, "-c", code, "train", *TINY, "--out", str(tmp_path / str(devices)),
             "--no-progress"], env=env, capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
    # Episode returns agree bitwise; losses may differ in the last bit (the per-device program
    # reduces a batch of one seed instead of two, so XLA may order float sums differently).
    one, two = metrics_without_wall(tmp_path / "1"), metrics_without_wall(tmp_path / "2")
    for a, b in zip(one, two, strict=True):
        for k in a:
            if k.startswith("return") or k in ("update", "env_steps", "episodes"):
                assert a[k] == b[k], k
            else:
                np.testing.assert_allclose(float(a[k]), float(b[k]), rtol=1e-5, atol=1e-7)


def test_a_run_without_finished_episodes_writes_strict_json(tmp_path, capsys):
    from pgjax.config import Config
    from pgjax.experiment import ensure_run

    # One update of 4 steps: no CartPole episode ends, so every final return is NaN.
    config = Config(num_envs=2, num_steps=4, total_timesteps=8)
    out = tmp_path / "run"
    main(["train", "--num-envs", "2", "--num-steps", "4", "--total-timesteps", "8", "--out",
          str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert "final return, min / max     no seed finished an episode in the last update" \
        in captured.out and captured.err == "", captured

    def strict(constant):
        raise ValueError(f"{constant} is not JSON")

    summary = json.loads((out / "summary.json").read_text(), parse_constant=strict)
    assert summary["final_return"]["per_seed"] == [None] * 16
    assert summary["final_return"]["iqm"] is None and summary["resumed_from_update"] is None
    for row in csv.DictReader((out / "metrics.csv").open()):
        assert np.isnan(float(row["return_mean"]))
    how, reused = ensure_run(config, out, seeds=16)
    assert how == "reused" and np.isnan(reused["final_return"]["per_seed"]).all()
    assert np.isnan(reused["final_return"]["iqm"])
