"""The JAX env suites by name (`SUITE:NAME`): each adapter against its suite's own stepping,
then training on tiny budgets: `pgjax train`, resume after SIGKILL and `pgjax eval` on two
suites, `make_train` on the others.

Each suite's tests skip when its extra is not installed (`pip install -e ".[envs]"`).
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cli_calls import cli
from killed_runs import kill_after_first_checkpoint

import pgjax
from pgjax import suites
from pgjax.cli import main


def one_line_error(code, err, message):
    assert code == 2, err
    assert err.startswith("pgjax: error: ") and message in err and "\n" not in err, err


# Stepping: the adapter (through pgjax.Env, one copy) and the suite's own functions, from one key


def keys_of(env_key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(reset key, step key) the suite sees when `pgjax.Env` gets `env_key` for one copy: Env
    splits it over B = 1, gymnax's step splits off its reset key."""
    one = jax.random.split(env_key, 1)[0]
    return one, jax.random.split(one)[0]


def run_adapter(env: pgjax.Env, actions):
    """Reset, then step `actions`; per step (reward, terminated, truncated, final_obs, obs)."""
    key = jax.random.key(0)
    obs, state = env.reset(key, 1)
    step = jax.jit(env.step)
    out = []
    for t, a in enumerate(actions):
        s = step(jax.random.fold_in(key, t), state, jnp.asarray(a)[None])
        state = s.state
        out.append((float(s.reward[0]), bool(s.terminated[0]), bool(s.truncated[0]),
                    np.asarray(s.final_obs[0]), np.asarray(s.obs[0])))
    return np.asarray(obs[0]), out


def check_episode(env, actions, reference, *, ends: str):
    """The adapter's steps equal `reference` (per step: obs, reward, its end flags) up to the
    episode's last step, which ends as `ends` ("terminated" or "truncated"); the step after it
    is the new episode's first."""
    first, steps = run_adapter(env, actions)
    ref_first, ref_steps = reference
    np.testing.assert_allclose(first, ref_first, rtol=1e-5, atol=1e-6)
    assert len(ref_steps) == len(steps) and len(steps) > 1
    for t, ((r, term, trunc, final, obs), (ref_obs, ref_r, ref_term, ref_trunc)) in enumerate(
            zip(steps, ref_steps, strict=True)):
        last = t == len(steps) - 1
        np.testing.assert_allclose(final, np.asarray(ref_obs, np.float32), rtol=1e-5, atol=1e-6,
                                   err_msg=f"step {t}")
        assert r == pytest.approx(float(ref_r), rel=1e-5, abs=1e-6), t
        assert (term, trunc) == (bool(ref_term), bool(ref_trunc)), t
        assert (term or trunc) == last, t
        if not last:
            np.testing.assert_array_equal(obs, final)
    assert (steps[-1][1], steps[-1][2]) == (ends == "terminated", ends == "truncated")


def smaller_limit(env: pgjax.Env, limit: int, **inner) -> pgjax.Env:
    params = env.params.replace(max_steps_in_episode=limit)
    if inner:
        params = params.replace(inner=params.inner.replace(**inner))
    return pgjax.Env(env.name, env=env.env, params=params)


@pytest.mark.parametrize("push, limit, ends", [(0.0, 5, "truncated"),
                                               (1.0, 1000, "terminated")])
def test_brax_against_its_episode_wrapper(push, limit, ends):
    pytest.importorskip("brax")
    from brax import envs

    env = smaller_limit(pgjax.Env("brax:inverted_pendulum"), limit)
    actions = [[push]] * (limit if ends == "truncated" else 200)
    ref = envs.create("inverted_pendulum", episode_length=limit, auto_reset=False)
    reset_key, _ = keys_of(jax.random.key(0))
    state = jax.jit(ref.reset)(reset_key)
    first, out, step = state.obs, [], jax.jit(ref.step)
    for a in actions:
        state = step(state, jnp.asarray(a))
        trunc = float(state.info["truncation"]) > 0
        out.append((state.obs, state.reward, state.done > 0 and not trunc, trunc))
        if state.done:
            break
    check_episode(env, actions[:len(out)], (first, out), ends=ends)


@pytest.mark.slow  # compiles Craftax's step twice: about 50 s on 2 CPU cores
def test_craftax_splits_its_done_at_the_time_limit():
    pytest.importorskip("craftax")
    from craftax.craftax_env import make_craftax_env_from_name

    env = smaller_limit(pgjax.Env("craftax:Craftax-Classic-Symbolic-v1"), 6, max_timesteps=6)
    ref = make_craftax_env_from_name("Craftax-Classic-Symbolic-v1", auto_reset=False)
    params = env.params.inner
    actions = [1, 2, 3, 4, 5, 0]
    reset_key, _ = keys_of(jax.random.key(0))
    first, state = jax.jit(ref.reset_env)(reset_key, params)
    out, step = [], jax.jit(ref.step_env)
    for t, a in enumerate(actions):
        _, step_key = keys_of(jax.random.fold_in(jax.random.key(0), t))
        obs, state, r, done, _ = step(step_key, state, a, params)
        out.append((obs, r, False, bool(done)))  # alive: its done is the time limit
    check_episode(env, actions, (first, out), ends="truncated")


def jumanji_reference(ref, actions, *, limit=None):
    reset_key, _ = keys_of(jax.random.key(0))
    state, ts = ref.reset(reset_key)
    first, out = ts.observation.grid, []
    for a in actions:
        state, ts = ref.step(state, jnp.asarray(a))
        ended = bool(ts.last())
        at_limit = limit is not None and int(state.step_count) >= limit
        out.append((ts.observation.grid, ts.reward, ended and not at_limit, ended and at_limit))
        if ended:
            break
    return first, out


def test_jumanji_snake_into_the_wall_terminates():
    pytest.importorskip("jumanji")
    import jumanji

    ref = jumanji.make("Snake-v1")
    first, out = jumanji_reference(ref, [0] * 20)  # up until the wall
    assert out[-1][2] and len(out) < 20
    check_episode(pgjax.Env("jumanji:Snake-v1"), [0] * len(out), (first, out),
                  ends="terminated")


def test_jumanji_snake_time_limit_is_truncation():
    """Snake ends at its time_limit with a discount-0 `termination`: the adapter calls it
    truncated."""
    pytest.importorskip("jumanji")
    from jumanji.environments import Snake

    actions = [0, 1, 2, 3] * 2  # round a 2×2 square: the snake of length 1 never dies
    first, out = jumanji_reference(Snake(time_limit=len(actions)), actions, limit=len(actions))
    assert len(out) == len(actions) and out[-1][3]
    env = smaller_limit(pgjax.Env("jumanji:Snake-v1"), len(actions))
    check_episode(env, actions, (first, out), ends="truncated")


def navix_reference(actions):
    import navix

    ref = navix.make("Navix-Empty-8x8-v0")
    reset_key, _ = keys_of(jax.random.key(0))
    ts = ref.reset(reset_key)
    first, out, step = ts.observation, [], jax.jit(ref.step)
    for a in actions:
        ts = step(ts, jnp.asarray(a))
        out.append((ts.observation, ts.reward, ts.is_termination(), ts.is_truncation()))
        if ts.is_done():
            break
    return first, out


@pytest.mark.parametrize("actions, ends", [([2] * 5 + [1] + [2] * 5, "terminated"),
                                           ([0] * 100, "truncated")])
def test_navix_empty_to_the_goal_and_to_the_limit(actions, ends):
    pytest.importorskip("navix")
    first, out = navix_reference(actions)
    assert len(out) == len(actions)
    check_episode(pgjax.Env("navix:Navix-Empty-8x8-v0"), actions, (first, out), ends=ends)


@pytest.mark.parametrize("actions, ends", [([0] * 5 + [1] + [0] * 5, "terminated"),
                                           ([1] * 256, "truncated")])
def test_xminigrid_empty_to_the_goal_and_to_the_limit(actions, ends):
    pytest.importorskip("xminigrid")
    import xminigrid

    ref, params = xminigrid.make("MiniGrid-Empty-8x8")
    reset_key, _ = keys_of(jax.random.key(0))
    ts = ref.reset(params, reset_key)
    first, out, step = ts.observation, [], jax.jit(ref.step)
    for a in actions:
        ts = step(params, ts, jnp.asarray(a))
        last = bool(ts.last())
        out.append((ts.observation, ts.reward, last and ts.discount == 0,
                    last and ts.discount != 0))
        if last:
            break
    assert len(out) == len(actions)
    check_episode(pgjax.Env("xminigrid:MiniGrid-Empty-8x8"), actions, (first, out), ends=ends)


# Names and errors


def test_unknown_suite_and_unknown_name_are_one_line(capsys):
    with pytest.raises(ValueError, match="unknown env suite 'brx'; did you mean brax"):
        pgjax.Env("brx:hopper")
    code, err = cli(capsys, "train", "--env", "gym:CartPole-v1")
    one_line_error(code, err, "unknown env suite 'gym'")
    pytest.importorskip("navix")
    code, err = cli(capsys, "train", "--env", "navix:Navix-Empty-8x8")
    one_line_error(code, err, "unknown env 'navix:Navix-Empty-8x8'; did you mean "
                              "navix:Navix-Empty-8x8-v0")


def test_a_suite_not_installed_is_one_line_with_its_install_command(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "xminigrid", None)  # `import xminigrid` fails
    with pytest.raises(suites.SuiteNotInstalled):
        pgjax.Env("xminigrid:MiniGrid-Empty-8x8")
    code, err = cli(capsys, "train", "--env", "xminigrid:MiniGrid-Empty-8x8", "--no-progress")
    one_line_error(code, err, 'xminigrid is not installed (xminigrid): '
                              'pip install "pgjax[xminigrid]"')


def test_gymnax_ids_make_the_same_env_as_before():
    import gymnax

    env = pgjax.Env("CartPole-v1")
    assert type(env.env) is type(gymnax.make("CartPole-v1")[0])
    assert suites.split("CartPole-v1") is None


def test_two_envs_of_one_suite_name_are_equal():
    pytest.importorskip("navix")
    a, b = pgjax.Env("navix:Navix-Empty-8x8-v0"), pgjax.Env("navix:Navix-Empty-8x8-v0")
    assert a == b and hash(a) == hash(b) and a != pgjax.Env("navix:Navix-Empty-6x6-v0")


# Training, resume and eval through the CLI

TRAIN = {  # small, quick to compile on CPU
    "brax:inverted_pendulum": ["--num-steps", "16"],
    "craftax:Craftax-Classic-Symbolic-v1": ["--num-steps", "8"],
    "jumanji:Snake-v1": ["--network", "cnn", "--num-steps", "16"],
    "navix:Navix-Empty-8x8-v0": ["--network", "cnn", "--num-steps", "16"],
    "xminigrid:MiniGrid-Empty-8x8": ["--num-steps", "16"],
}


def tiny(name: str, updates: int = 2) -> list[str]:
    steps = int(TRAIN[name][-1])
    return ["--env", name, *TRAIN[name], "--num-envs", "4", "--total-timesteps",
            str(4 * steps * updates), "--seeds", "2", "--no-progress"]


@pytest.mark.parametrize("name", ["navix:Navix-Empty-8x8-v0", "xminigrid:MiniGrid-Empty-8x8"])
def test_train_and_eval_through_the_cli(name, tmp_path, capsys):
    pytest.importorskip(name.split(":")[0])
    out = tmp_path / "run"
    code, err = cli(capsys, "train", *tiny(name), "--out", str(out))
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env"] == name and len(summary["final_return"]["per_seed"]) == 2
    code, err = cli(capsys, "eval", str(out), "--episodes", "1")
    assert code == 0, err
    result = json.loads((out / "eval.json").read_text())
    assert set(result) >= {"greedy", "sampled"} and np.isfinite(result["greedy"]["iqm"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["navix:Navix-Empty-8x8-v0"])
def test_resume_after_sigkill_equals_uninterrupted(name, tmp_path):
    pytest.importorskip(name.split(":")[0])
    from pgjax.experiment import compare_metrics

    args = ["train", *tiny(name, updates=6), "--chunks", "6", "--checkpoint-every", "1"]
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    kill_after_first_checkpoint([sys.executable, "-m", "pgjax.cli", *args, "--out", str(killed)],
                                killed)
    main(["train", "--resume", str(killed), "--no-progress"])
    main([*args, "--out", str(whole)])
    resumed = json.loads((killed / "summary.json").read_text())
    assert 0 < resumed["resumed_from_update"] < 6
    assert compare_metrics(killed, whole) is None
    assert resumed["final_return"] == json.loads((whole / "summary.json").read_text())[
        "final_return"]


@pytest.mark.parametrize("name", [
    "jumanji:Snake-v1", "brax:inverted_pendulum",
    pytest.param("craftax:Craftax-Classic-Symbolic-v1", marks=pytest.mark.slow),
])
def test_the_other_suites_train_through_make_train(name):
    """The program `pgjax train` runs, compiled once (the CLI around it, with its separate init,
    chunk and eval programs, is tested on Navix and XLand-MiniGrid above: three compiles of a
    Brax or Craftax step cost minutes on 2 CPU cores)."""
    pytest.importorskip(name.split(":")[0])
    args = dict(zip(TRAIN[name][::2], TRAIN[name][1::2], strict=True))
    config = pgjax.Config(env=name, network=args.get("--network", "mlp"), num_envs=4,
                          num_steps=int(args["--num-steps"]),
                          total_timesteps=4 * int(args["--num-steps"]) * 2, hidden=(8,))
    params, metrics = jax.jit(jax.vmap(pgjax.make_train(config)))(jax.random.split(
        jax.random.key(0), 2))
    assert metrics.loss.shape == (2, 2) and np.isfinite(np.asarray(metrics.loss)).all()
    assert np.isfinite(np.asarray(metrics.grad_norm)).all()
    assert jax.tree.all(jax.tree.map(lambda x: bool(np.isfinite(x).all()), params.params))


def test_a_suite_env_trains_through_make_train_and_in_a_sweep(tmp_path):
    """The same name through the Python API and a sweep spec (a one-program grid over lr)."""
    pytest.importorskip("xminigrid")
    name = "xminigrid:MiniGrid-Empty-8x8"
    config = pgjax.Config(env=name, num_envs=4, num_steps=16, total_timesteps=128, hidden=(8,))
    state, metrics = jax.jit(pgjax.make_train(config))(jax.random.key(0))
    assert metrics.loss.shape == (2,) and np.isfinite(np.asarray(metrics.loss)).all()
    table = pgjax.sweep({"env": name, "num_envs": 4, "num_steps": 16, "total_timesteps": 128,
                         "hidden": [8], "seeds": 2, "grid": {"lr": [1e-3, 1e-2]}}, tmp_path)
    assert list(table["env"]) == [name] * 4 and not table["diverged"].any()
