"""evaluate, `pgjax eval`, `pgjax plot`, `pgjax reproduce` on a tiny run."""

import csv
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgjax
from pgjax import runs
from pgjax.cli import main
from pgjax.evaluate import evaluate, play

TINY = ["--total-timesteps", "4000", "--num-envs", "8", "--num-steps", "100", "--seeds", "2",
        "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    main(["train", *TINY, "--out", str(out)])
    return out


def test_evaluate_counts_one_whole_episode():
    config = pgjax.Config()
    params = pgjax.init_state(config, jax.random.key(0)).params["policy"]
    ret = np.asarray(evaluate(pgjax.build(config), params, jax.random.key(1), 16, greedy=False))
    assert ret.shape == (16,) and (ret >= 8).all() and (ret <= 500).all()
    # CartPole pays 1 per step: a random policy's first episodes average ~22 steps.
    assert 10 < ret.mean() < 60


def test_play_marks_the_first_episode_and_stacks_what_act_reports():
    env = pgjax.Env("CartPole-v1")

    def act(key, carry, obs, first, state):
        action = jax.random.randint(key, first.shape, 0, env.num_actions)
        return carry + first, action, (action, state.time, carry)

    ret, alive, (actions, time, carries) = jax.jit(
        lambda k: play(env, act, k, 8, carry=jnp.zeros(8, jnp.int32)))(jax.random.key(3))
    ret, alive, actions, time, carries = map(np.asarray, (ret, alive, actions, time, carries))
    assert alive.shape == actions.shape == (env.max_episode_steps, 8)
    # CartPole pays 1 per step: the return is the first episode's length, and `alive` is a
    # prefix of ones of that length (the steps after the auto-reset are not counted).
    lengths = alive.sum(0)
    np.testing.assert_array_equal(ret, lengths)
    np.testing.assert_array_equal(alive, np.arange(len(alive))[:, None] < lengths)
    np.testing.assert_array_equal(time[0], 0)
    # The carry is threaded through the steps, and `first` is set on the first step only.
    np.testing.assert_array_equal(carries[0], 0)
    np.testing.assert_array_equal(carries[1:], 1)
    assert ((actions == 0) | (actions == 1)).all() and 0 < actions[alive].mean() < 1
    assert (lengths < env.max_episode_steps).all()


def test_eval_is_deterministic_for_greedy_actions(run_dir, capsys):
    main(["eval", str(run_dir), "--episodes", "5"])
    first = json.loads((run_dir / "eval.json").read_text())
    main(["eval", str(run_dir), "--episodes", "5"])
    second = json.loads((run_dir / "eval.json").read_text())
    assert first["greedy"] == second["greedy"] and first["checkpoint_update"] == 5
    assert len(first["greedy"]["per_seed_mean"]) == 2
    for mode in ("greedy", "sampled"):
        r = first[mode]
        # Two seeds: the IQM is their mean (rliable keeps both), inside its interval.
        assert r["iqm"] == pytest.approx(np.mean(r["per_seed_mean"]))
        assert min(r["per_seed_mean"]) <= r["ci95"][0] <= r["iqm"] <= r["ci95"][1]
        assert r["ci95"][1] <= max(r["per_seed_mean"])
    out = capsys.readouterr().out
    assert f"greedy IQM [95% CI] over seeds: {first['greedy']['iqm']:.2f}" in out


def test_plot_writes_images(run_dir, tmp_path):
    main(["plot", str(run_dir), str(run_dir), "--out", str(tmp_path / "c"), "--x", "wall_seconds"])
    assert (tmp_path / "c.png").stat().st_size > 5000
    assert (tmp_path / "c.svg").read_text().lstrip().startswith("<?xml")
    main(["plot", str(run_dir), "--out", str(tmp_path)])  # a folder: the figure goes inside
    assert (tmp_path / "curves.png").is_file() and (tmp_path / "curves.svg").is_file()


def test_reproduce_matches_then_detects_a_change(run_dir, capsys):
    main(["reproduce", str(run_dir), "--no-progress"])
    assert "reproduced: metrics" in capsys.readouterr().out
    path = run_dir / "metrics.csv"
    rows = list(csv.reader(path.open()))
    col = rows[0].index("loss")
    rows[3][col] = repr(float(rows[3][col]) + 1e-6)
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(SystemExit) as exit_info:
        main(["reproduce", str(run_dir), "--no-progress"])
    assert exit_info.value.code == 1
    out = capsys.readouterr().out
    assert "NOT reproduced: update 3, loss" in out and "recorded on" not in out  # same CPU
    assert "np.float64" not in out  # the numbers as plain floats
    record = json.loads((run_dir / "config.json").read_text())
    assert record["cpu"] == runs.cpu()
    record["cpu"] = {"name": "Other CPU", "isa": ["avx512f"]}
    (run_dir / "config.json").write_text(json.dumps(record))
    with pytest.raises(SystemExit):
        main(["reproduce", str(run_dir), "--no-progress"])
    assert "recorded on Other CPU (avx512f), rerun on " in capsys.readouterr().out


def test_a_run_recorded_with_a_negative_seed_reproduces(tmp_path, capsys):
    # Before seeds were checked, --seed -1 trained with the keys of 2**32 - 1.
    out = tmp_path / "run"
    main(["train", *TINY, "--seed", str(2**32 - 1), "--out", str(out)])
    record = json.loads((out / "config.json").read_text())
    del record["seeds_sha256"]  # as recorded then
    (out / "config.json").write_text(json.dumps({**record, "seed": -1}))
    capsys.readouterr()
    main(["reproduce", str(out), "--no-progress"])
    assert "reproduced: metrics" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["eval", "plot", "reproduce"])
def test_commands_reject_a_non_run(tmp_path, capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main([command, str(tmp_path)])
    assert exit_info.value.code == 2
    assert "is not a pgjax run directory" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_gif_of_a_catch_run(tmp_path, capsys):
    out = tmp_path / "catch"
    main(["train", "--env", "Catch-bsuite", "--num-envs", "8", "--num-steps", "18",
          "--total-timesteps", str(8 * 18 * 2), "--seeds", "2", "--no-progress", "--out", str(out)])
    main(["eval", str(out), "--episodes", "2", "--gif", str(tmp_path / "catch.gif")])
    assert (tmp_path / "catch.gif").read_bytes()[:4] == b"GIF8"
    assert "one greedy episode of seed 0" in capsys.readouterr().out


def test_eval_gif_without_pygame_is_one_line(run_dir, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    fake = lambda name, *args: None if name == "pygame" else real(name, *args)
    monkeypatch.setattr(importlib.util, "find_spec", fake)
    (run_dir / "eval.json").unlink(missing_ok=True)
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(run_dir), "--episodes", "2", "--gif", str(tmp_path / "x.gif")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and 'needs pygame: pip install -e ".[render]"' in err, err
    assert not (run_dir / "eval.json").exists()  # refused before evaluating
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert 'pip install -e ".[render]"' in readme


def test_a_gif_of_an_env_gymnax_does_not_draw_is_refused():
    from pgjax.render import render_unavailable

    assert render_unavailable("Catch-bsuite") is None
    assert render_unavailable("DeepSea-bsuite").startswith(
        "gymnax's visualizer does not draw DeepSea-bsuite (it draws Acrobot-v1, ")
