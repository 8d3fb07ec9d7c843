"""Components in: a user's env, policy, value net and estimator through the whole pipeline."""

import csv
import dataclasses
import functools
import json
import sys
from pathlib import Path

import chex
import flax.linen as nn
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from gymnax.environments import spaces
from killed_runs import kill_after_first_checkpoint
from user_components import BiasedPolicy, LogitsOnly, ShortCorridor

import pgjax
from pgjax import components
from pgjax.checkpoint import CheckpointError
from pgjax.cli import main
from pgjax.config import CHOICES, Config
from pgjax.train import init_state, loss_and_grad, train_step

CORRIDOR = pgjax.Env("corridor", env=ShortCorridor())
OPTIMUM_P_RIGHT = 2 - np.sqrt(2)  # Sutton & Barto Example 13.1: p* = 0.586, J(p*) = −11.6


def corridor_value(p):
    """Expected undiscounted return from the start state under P(right) = p (linear solve)."""
    a = np.array([[p, -p, 0], [-p, 1, -(1 - p)], [0, -(1 - p), 1]])
    return np.linalg.solve(a, -np.ones(3))[0]


def test_corridor_closed_form():
    assert corridor_value(0.5) == pytest.approx(-12.0)
    ps = np.linspace(0.05, 0.95, 901)
    best = ps[np.argmax([corridor_value(p) for p in ps])]
    assert abs(best - OPTIMUM_P_RIGHT) < 2e-3
    assert corridor_value(best) == pytest.approx(-11.66, abs=0.01)


@pytest.mark.slow
def test_make_train_with_own_env_and_policy_reaches_the_book_optimum():
    config = pgjax.Config(num_envs=16, num_steps=200, total_timesteps=640_000, gamma=1.0, lr=0.05)
    train = pgjax.make_train(config, env=CORRIDOR, policy=BiasedPolicy())
    state, metrics = jax.jit(jax.vmap(train))(jax.random.split(jax.random.key(0), 4))
    logits = np.asarray(state.params["policy"]["params"]["logits"])
    p_right = np.exp(logits[:, 1]) / np.exp(logits).sum(1)
    ret = np.asarray(metrics.episode_return)
    assert ret[:, :5].mean() < -30  # starts at P(right) = 0.1: J = −42
    assert np.all(np.abs(p_right - OPTIMUM_P_RIGHT) < 0.08), p_right
    assert ret[:, -10:].mean() > -12.5, ret[:, -10:].mean(1)


@dataclasses.dataclass(frozen=True)
class MeanBaseline:
    """A user's estimator written from the public kernels: the built-in default, spelled out."""

    uses_value = False
    sign: float = 1.0

    def __call__(self, inputs: pgjax.EstimatorInputs) -> pgjax.Targets:
        batch = inputs.batch
        g = pgjax.discounted_returns(batch.reward, batch.done, inputs.gamma)
        mask = pgjax.complete_episode_mask(batch.done)
        advantages = pgjax.normalize(g - pgjax.masked_mean(g, mask), mask)
        return pgjax.Targets(g, self.sign * advantages, mask, None)


def batch_of(config, parts):
    state = init_state(config, jax.random.key(0), parts)
    policy = functools.partial(parts.policy.apply, state.params["policy"])
    runner, batch = pgjax.rollout(jax.random.key(1), parts.env, policy, state.runner,
                                  config.num_steps)
    return state.params, batch, runner.obs


@pytest.mark.parametrize("loss_chunks", [1, 4])
def test_user_estimator_gives_the_builtin_mean_baseline_gradient(loss_chunks):
    config = pgjax.Config(num_envs=8, num_steps=100, loss_chunks=loss_chunks)
    builtin = pgjax.build(config)
    params, batch, last_obs = batch_of(config, builtin)
    grad = jax.jit(loss_and_grad, static_argnums=(1, 2))
    (_, aux), expected = grad(params, config, builtin, batch, last_obs)
    mine = pgjax.build(config, estimator=MeanBaseline())
    (_, my_aux), got = grad(params, config, mine, batch, last_obs)
    chex.assert_trees_all_close(got, expected, rtol=1e-6, atol=1e-8)
    assert float(optax.tree.norm(expected)) > 0
    # The estimator is used on every path: flipped advantages flip the policy gradient.
    flipped = pgjax.build(config, estimator=MeanBaseline(sign=-1.0))
    _, neg = grad(params, config, flipped, batch, last_obs)
    chex.assert_trees_all_close(neg, jax.tree.map(jnp.negative, expected), rtol=1e-5, atol=1e-7)


class ShapeCheckingCNN(nn.Module):
    """A user's convolutional policy that insists on MinAtar frames [..., 10, 10, C]."""

    num_actions: int

    @nn.compact
    def __call__(self, obs):
        assert obs.shape[-3:-1] == (10, 10), obs.shape
        x = pgjax.ConvTorso()(obs)
        return pgjax.Categorical(nn.Dense(self.num_actions)(x))


def test_cnn_policies_receive_unflattened_minatar_frames():
    config = pgjax.Config(env="Breakout-MinAtar", num_envs=4, num_steps=20, network="cnn",
                          baseline="value")
    parts = pgjax.build(config)
    assert parts.env.obs_shape == (10, 10, 4)
    assert isinstance(parts.policy.torso, pgjax.ConvTorso)
    state = init_state(config, jax.random.key(0), parts)
    kernel = state.params["policy"]["params"]["torso"]["Conv_0"]["kernel"]
    assert kernel.shape == (3, 3, 4, 16)
    assert state.params["value"]["params"]["torso"]["Conv_0"]["kernel"].shape == (3, 3, 4, 16)
    new, metrics = jax.jit(functools.partial(train_step, config, parts=parts))(
        state, jax.random.key(1))
    chex.assert_tree_all_finite(new.params)
    assert float(metrics.grad_norm) > 0

    mine = pgjax.build(config.replace(baseline="mean"), policy=ShapeCheckingCNN(3))
    state, metrics = jax.jit(pgjax.train, static_argnums=2)(
        config.replace(baseline="mean", total_timesteps=160), jax.random.key(0), mine)
    chex.assert_shape(state.runner.obs, (4, 10, 10, 4))
    assert np.isfinite(np.asarray(metrics.loss)).all()


def test_mlp_flattens_minatar_frames_with_the_same_parameters_as_before():
    parts = pgjax.build(pgjax.Config(env="Breakout-MinAtar"))
    params = parts.policy.init(jax.random.key(0), jnp.zeros((1, 10, 10, 4)))
    assert params["params"]["MLP_0"]["Dense_0"]["kernel"].shape == (400, 32)


class UnsupportedActions(ShortCorridor):
    def action_space(self, params=None):
        return spaces.Dict({"a": spaces.Discrete(2)})


class FiveValueStep(ShortCorridor):  # the gym API before gymnax 1.0
    def step(self, key, state, action, params=None):
        obs, state, reward, terminated, truncated, info = super().step(key, state, action, params)
        return obs, state, reward, terminated | truncated, info


class NoFinalObservation(ShortCorridor):
    def step(self, key, state, action, params=None):
        return (*super().step(key, state, action, params)[:5], {})


class WrongObservationSpace(ShortCorridor):
    def observation_space(self, params=None):
        return spaces.Box(0.0, 1.0, (3,), jnp.float32)


class DictObservations(ShortCorridor):
    def observation_space(self, params=None):
        return spaces.Dict({"pos": spaces.Box(0.0, 1.0, (1,), jnp.float32)})


class SwappedRecurrent(nn.Module):  # returns (distribution, carry): the wrong order
    def initialize_carry(self, batch_shape):
        return jnp.zeros((*batch_shape, 4))

    @nn.compact
    def __call__(self, carry, obs, first):
        return pgjax.Categorical(logits=nn.Dense(2)(obs)), carry


class TwoValues(nn.Module):
    @nn.compact
    def __call__(self, obs):
        return nn.Dense(2)(obs)


class PlainCategorical:
    """A distribution with every method that is not a pytree."""

    def __init__(self, logits):
        self.logits = logits

    def sample(self, key):
        return jax.random.categorical(key, self.logits)

    def log_prob(self, action):
        return pgjax.Categorical(self.logits).log_prob(action)

    def entropy(self):
        return pgjax.Categorical(self.logits).entropy()


class PlainPolicy(nn.Module):
    @nn.compact
    def __call__(self, obs):
        return PlainCategorical(nn.Dense(2)(obs))


class NoMode(pgjax.Categorical):
    mode = None


class NoModePolicy(nn.Module):
    @nn.compact
    def __call__(self, obs):
        return NoMode(nn.Dense(2)(obs))


@dataclasses.dataclass(frozen=True)
class NoUsesValue:
    def __call__(self, inputs):
        return pgjax.build(pgjax.Config()).estimator(inputs)


@dataclasses.dataclass(frozen=True)
class GroupsOfThree:
    group_size: int = 3  # does not divide num_envs=8
    uses_value = False

    def __call__(self, inputs):
        return pgjax.build(pgjax.Config()).estimator(inputs)


@dataclasses.dataclass(frozen=True)
class PlainTuple:
    uses_value = False

    def __call__(self, inputs):  # the targets as a tuple, not Targets
        return tuple(pgjax.build(pgjax.Config()).estimator(inputs))


@dataclasses.dataclass(frozen=True)
class LastStepOnly:
    uses_value = False

    def __call__(self, inputs):  # advantages of the last step only: [B], not [T, B]
        r = inputs.batch.reward
        return pgjax.losses.Targets(r, r[-1], None, None)


@dataclasses.dataclass(frozen=True)
class WrongMask:
    uses_value = False

    def __call__(self, inputs):
        r = inputs.batch.reward
        return pgjax.losses.Targets(r, r, r[:, :1], None)


@dataclasses.dataclass(frozen=True)
class NeedsValues:
    uses_value = False  # but it reads the values

    def __call__(self, inputs):
        v = inputs.value_fn(inputs.batch.obs)
        return pgjax.losses.Targets(v, v, None, None)


class FlattensByBatch(nn.Module):
    """Flattens all but its input's first axis: right for [B, *obs], wrong for [T, B, *obs]."""

    @nn.compact
    def __call__(self, obs):
        return pgjax.Categorical(nn.Dense(2)(obs.reshape(obs.shape[0], -1)))


class SummedCategorical(pgjax.Categorical):
    def log_prob(self, action):  # sums over every axis but the last
        lp = super().log_prob(action)
        return lp.reshape(-1, lp.shape[-1]).sum(0)


class LogProbOverAll(nn.Module):
    @nn.compact
    def __call__(self, obs):
        return SummedCategorical(nn.Dense(2)(obs))


@pytest.mark.parametrize(
    "config, components, message",
    [
        (pgjax.Config(), {"estimator": PlainTuple()}, "PlainTuple returned tuple; it must "
         "return pgjax.losses.Targets(returns, advantages, mask, weights)"),
        (pgjax.Config(num_steps=500, num_envs=8), {"estimator": LastStepOnly()},
         "LastStepOnly returned advantages of shape (8,) for a batch of shape (500, 8); "
         "expected (500, 8)"),
        (pgjax.Config(num_envs=8), {"estimator": WrongMask()},
         "returned mask of shape (500, 1) for a batch of shape (500, 8); expected (500, 8) "
         "or None"),
        (pgjax.Config(num_envs=8), {"estimator": NeedsValues()},
         "the estimator NeedsValues fails on a batch of shape (500, 8): 'NoneType' object is "
         "not callable"),
        (pgjax.Config(env="Pendulum-v1"), {"policy": pgjax.GaussianPolicy((8,), 3)},
         "samples a batch of 1 action of shape (1, 3); Pendulum-v1's is (1, 1)"),
        (pgjax.Config(), {"policy": pgjax.CategoricalPolicy((8,), 5)},
         "logits for a batch of 1 have shape (1, 5); CartPole-v1 has 2 actions"),
        (pgjax.Config(), {"policy": PlainPolicy()}, "is not a pytree of arrays"),
        (pgjax.Config(), {"estimator": NoUsesValue()}, "NoUsesValue needs uses_value: bool"),
        (pgjax.Config(num_envs=4.0), {}, "num_envs must be an integer, got 4.0"),
        (pgjax.Config(hidden=(8, 2.5)), {}, "hidden sizes must be integers, got 2.5"),
        (pgjax.Config(), {"policy": LogitsOnly()}, "the policy returned an array, which has no "
         "sample()"),
        (pgjax.Config(num_envs=8), {"estimator": GroupsOfThree()},
         "GroupsOfThree has group_size 3; it must be a positive integer dividing num_envs=8"),
        (pgjax.Config(), {"estimator": PlainTuple}, "estimator= takes an instance "
         "(PlainTuple(...)), not the class PlainTuple"),
        (pgjax.Config(), {"policy": pgjax.CategoricalPolicy((8,), 2, pgjax.ConvTorso())},
         "cannot take CartPole-v1 observations of shape (4,)"),
        (pgjax.Config(network="cnn"), {}, "network='cnn' needs image observations"),
        (pgjax.Config(), {"env": UnsupportedActions()}, "action space Dict is not supported"),
        (pgjax.Config(), {"env": 3}, "env must be a pgjax.Env"),
        (pgjax.Config(), {"policy": lambda obs: obs}, "policy= takes a flax module (with init "
         "and apply), got function"),
        (pgjax.Config(), {"policy": SwappedRecurrent()}, "a policy maps observations to a "
         "distribution, and a recurrent one (carry, obs, first) to (carry, distribution), in "
         "that order"),
        (pgjax.Config(), {"env": FiveValueStep()}, "the env FiveValueStep's step returns 5 "
         "values; a gymnax 1.0 env returns six: obs, state, reward, terminated, truncated, info"),
        (pgjax.Config(), {"env": NoFinalObservation()}, "the env NoFinalObservation's step info "
         "has no 'final_observation'"),
        (pgjax.Config(), {"env": WrongObservationSpace()}, "the env WrongObservationSpace "
         "resets to observations of shape (1,); its observation space says (3,)"),
        (pgjax.Config(), {"env": DictObservations()}, "DictObservations: observation space Dict "
         "has no shape; pgjax takes array observations (Box or Discrete)"),
        (pgjax.Config(), {"env": (ShortCorridor(), {"length": 5})}, "its params have no "
         "max_steps_in_episode"),
        (pgjax.Config(), {"value": pgjax.ValueNet((8,))}, "does not use one"),
        (pgjax.Config(baseline="value"), {"value": TwoValues()}, "expected (1,)"),
        (pgjax.Config(init_log_std=-1.0), {}, "continuous actions only"),
        (pgjax.Config(window="bootstrap"), {}, "needs baseline='value'"),
        (pgjax.Config(window="episodes", num_steps=100), {}, "episode limit of CartPole-v1"),
        (pgjax.Config(lr=float("inf")), {}, "lr must be finite"),
        (pgjax.Config(), {"policy": FlattensByBatch()}, "the policy cannot take CartPole-v1 "
         "observations of shape (4,) (batched [2, 3, ...]), as the loss applies it to a [T, B] "
         "batch at once: it must act on the observation's axes only (see pgjax.Flatten)"),
        (pgjax.Config(), {"policy": LogProbOverAll()}, "the policy's log_prob of [T, B] = [2, 3] "
         "observations has shape (3,), not (2, 3)"),
    ],
)
def test_bad_components_fail_before_compile_with_one_line(config, components, message):
    with pytest.raises(ValueError) as info:
        pgjax.make_train(config, **components)
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_a_config_that_is_not_a_config_is_one_line():
    with pytest.raises(ValueError, match="^config must be a pgjax.Config, got dict$"):
        pgjax.make_train({"env": "CartPole-v1"})


def test_greedy_evaluation_needs_a_mode():
    pgjax.components.check_greedy(pgjax.build(pgjax.Config()))
    with pytest.raises(ValueError, match="NoMode, which has no mode"):
        pgjax.components.check_greedy(pgjax.build(pgjax.Config(), policy=NoModePolicy()))


def test_cli_rejects_cnn_on_vector_observations(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--network", "cnn", "--no-progress"])
    assert exit_info.value.code == 2
    assert "network='cnn' needs image observations" in capsys.readouterr().err


TESTS = Path(__file__).resolve().parent
RUN = """
import sys; sys.path.insert(0, {tests!r})
import pgjax
from user_components import BiasedPolicy, ShortCorridor
pgjax.train_run(pgjax.Config(num_envs=16, num_steps=200, total_timesteps=16 * 200 * 30,
                             gamma=1.0, lr=0.05),
                {out!r}, seeds=2, chunks=30, checkpoint_every=1, progress=False,
                env=pgjax.Env("corridor", env=ShortCorridor()), policy=BiasedPolicy())
"""


def rows(run_dir):
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    return [{k: v for k, v in row.items() if k != "wall_seconds"} for row in rows]


@pytest.mark.slow
def test_train_run_with_own_components_resumes_bitwise_after_sigkill(tmp_path, capsys):
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    kill_after_first_checkpoint(
        [sys.executable, "-c", RUN.format(tests=str(TESTS), out=str(killed))], killed)
    record = json.loads((killed / "config.json").read_text())
    assert record["config"]["env"] == "corridor"
    assert record["components"]["given"] == ["env", "policy"]

    # Resuming, evaluating or reproducing asks for the run's own components again.
    for argv in (["train", "--resume", str(killed)], ["eval", str(killed)],
                 ["reproduce", str(killed)]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert "trained with its own env, policy" in err and "\n" not in err, err

    env, policy = pgjax.Env("corridor", env=ShortCorridor()), BiasedPolicy()
    _, resumed = pgjax.train_run(None, killed, resume=True, progress=False, env=env,
                                 policy=policy)
    config = pgjax.Config(num_envs=16, num_steps=200, total_timesteps=16 * 200 * 30, gamma=1.0,
                          lr=0.05)
    _, full = pgjax.train_run(config, whole, seeds=2, chunks=30, progress=False, env=env,
                              policy=policy)
    assert 0 < resumed["resumed_from_update"] < 30
    assert rows(killed) == rows(whole) and len(rows(whole)) == 30
    assert resumed["final_return"] == full["final_return"]
    assert full["env"] == "corridor"

    result = pgjax.evaluate_run(whole, episodes=64, env=env, policy=policy)
    assert len(result["sampled"]["per_seed_mean"]) == 2
    assert result["sampled"]["mean"] > -30  # P(right) 0.1 at the start scores −42
    assert pgjax.reproduce_run(whole, progress=False, env=env, policy=policy)["difference"] \
        is None
    with pytest.raises(ValueError, match="trained on env 'corridor', not 'CartPole-v1'"):
        pgjax.evaluate_run(whole, env=pgjax.Env("CartPole-v1"), policy=policy)

    class OtherPolicy(BiasedPolicy):  # the same parameters under another class
        pass

    capsys.readouterr()
    pgjax.evaluate_run(whole, episodes=2, env=env, policy=OtherPolicy())
    assert capsys.readouterr().err == "pgjax: this run was trained with policy " \
        "BiasedPolicy(p_right=0.1); using the policy given: OtherPolicy(p_right=0.1)\n"
    pgjax.evaluate_run(whole, episodes=2, env=env, policy=BiasedPolicy(p_right=0.3))
    assert capsys.readouterr().err.endswith("given: BiasedPolicy(p_right=0.3)\n")
    record = json.loads((whole / "config.json").read_text())
    record["components"]["policy"] = "BiasedPolicy"  # as recorded before settings were
    (whole / "config.json").write_text(json.dumps(record))
    pgjax.evaluate_run(whole, episodes=2, env=env, policy=policy)
    assert capsys.readouterr().err == ""

    class OtherParams(nn.Module):  # parameters the checkpoints do not hold
        @nn.compact
        def __call__(self, obs):
            logits = self.param("other", lambda key: jnp.zeros(2))
            return pgjax.Categorical(jnp.broadcast_to(logits, (*obs.shape[:-1], 2)))

    before = sorted(p.name for p in (killed / "checkpoints").iterdir())
    with pytest.raises(CheckpointError, match=r"does not fit the state made from config.json "
                       r"or the policy given \(it stores no .*other\); was config.json or the "
                       r"policy given changed after training\?$"):
        pgjax.evaluate_run(killed, episodes=2, env=env, policy=OtherParams())
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == before


@pytest.mark.parametrize("estimator", CHOICES["estimator"])
def test_unused_fields_are_those_make_estimator_does_not_pass(estimator):
    # Each estimator setting changed alone: the built estimator changes iff the field is read.
    base = Config(estimator=estimator, num_envs=8)
    other = {"baseline": "none", "window": "episodes", "gamma_weighting": True,
             "gae_lambda": 0.5, "group_size": 4, "group_restart": "window",
             "normalize_advantages": False}
    for name in components.ESTIMATOR_FIELDS:
        changed = dataclasses.replace(base, **{name: other[name]})
        read = components.make_estimator(changed) != components.make_estimator(base)
        assert (name in components.unused_fields(changed)) == (not read), name


class ByIdentity:  # a valid estimator whose repr is its address
    uses_value = False

    def __init__(self, **settings):
        vars(self).update(settings)

    def __call__(self, inputs):
        return pgjax.build(pgjax.Config()).estimator(inputs)


def test_a_given_component_is_compared_with_the_record_without_addresses(capsys):
    from pgjax.experiment import run_components

    config = pgjax.Config()
    record = {"components": components.describe_given({"estimator": ByIdentity()})}
    assert record["components"]["estimator"] == "<test_components.ByIdentity object>"
    old = {"components": {"given": ["estimator"], "estimator": repr(ByIdentity())}}
    assert " object at 0x" in old["components"]["estimator"]  # as recorded before
    for recorded in (record, old):
        run_components(config, recorded, {"estimator": ByIdentity()})  # another instance
        assert capsys.readouterr().err == ""
    # Attributes tell the settings of an object shown by identity.
    with_lam = {"components": components.describe_given({"estimator": ByIdentity(lam=0.9)})}
    assert with_lam["components"]["estimator"] == \
        "<test_components.ByIdentity object> with lam=0.9"
    run_components(config, with_lam, {"estimator": ByIdentity(lam=0.5)})
    assert capsys.readouterr().err.endswith("using the estimator given: "
                                            "<test_components.ByIdentity object> with lam=0.5\n")
    run_components(config, record, {"estimator": pgjax.estimators.TotalReturn()})
    assert capsys.readouterr().err == "pgjax: this run was trained with estimator " \
        "<test_components.ByIdentity object>; using the estimator given: " \
        f"{pgjax.estimators.TotalReturn()!r}\n"


def test_env_params_are_recorded_and_a_change_is_named(capsys):
    from pgjax.experiment import run_components

    env, params = gymnax.make("CartPole-v1")
    record = {"components": components.describe_given({"env": (env, params)})}
    assert record["components"]["env_params"]["max_steps_in_episode"] == 500
    assert record["components"]["env_params"]["gravity"] == pytest.approx(9.8)
    json.dumps(record, allow_nan=False)  # plain JSON
    run_components(pgjax.Config(), record, {"env": (env, params)})
    assert capsys.readouterr().err == ""
    run_components(pgjax.Config(), record,
                   {"env": (env, params.replace(max_steps_in_episode=200))})
    assert capsys.readouterr().err == "pgjax: this run was trained with env params " \
        "max_steps_in_episode=500; using the env params given: max_steps_in_episode=200\n"


@pytest.mark.parametrize("estimator", [ByIdentity(), pgjax.estimators.GAE(0.9)])
def test_a_run_of_an_own_estimator_evaluates_without_it(tmp_path, capsys, estimator):
    # Playing a policy calls no estimator: only whether it trained a value net shapes the state.
    config = pgjax.Config(num_envs=4, num_steps=50, total_timesteps=400)
    run, _ = pgjax.train_run(config, tmp_path / "run", seeds=2, progress=False,
                             estimator=estimator)
    record = json.loads((run / "config.json").read_text())["components"]
    assert record["estimator_uses_value"] is estimator.uses_value
    with_it = pgjax.evaluate_run(run, episodes=2, estimator=estimator)
    assert pgjax.evaluate_run(run, episodes=2) == with_it
    assert main(["eval", str(run), "--episodes", "2"]) is None
    assert capsys.readouterr().err == ""
    summary = json.loads((run / "summary.json").read_text())
    assert pgjax.train_run(None, run, resume=True, progress=False)[1] == summary  # finished
    (run / "summary.json").unlink()  # unfinished: training calls the estimator
    with pytest.raises(ValueError, match="trained with its own estimator"):
        pgjax.train_run(None, run, resume=True, progress=False)


def test_env_params_of_any_leaf_are_recorded_as_json():
    env, params = gymnax.make("CartPole-v1")
    odd = params.replace(gravity=jnp.float32(jnp.inf), length=jnp.array([0.5, jnp.nan]),
                         tau=ByIdentity(), polemass_length=jax.random.key(0))
    recorded = components.describe_given({"env": (env, odd)})
    params_json = recorded["env_params"]
    assert params_json["gravity"] is None and params_json["length"] == [0.5, None]
    assert params_json["tau"] == "<test_components.ByIdentity object>"
    assert params_json["polemass_length"] == [0, 0]  # a key's data
    json.dumps(recorded, allow_nan=False)
    # described again (another process: other addresses) it is the same
    assert components.given_differences(
        recorded, components.describe_given({"env": (env, odd.replace(tau=ByIdentity()))})) == []
    long = odd.replace(length=jnp.arange(100.0))
    (_, then, now), = components.given_differences(
        recorded, components.describe_given({"env": (env, long)}))
    assert then == "length=[0.5, None]" and len(now) == 80 and now.endswith("…")


def test_numpy_scalars_in_a_config_are_recorded_as_numbers():
    config = Config(lr=np.float32(0.01), num_envs=np.int64(8), hidden=(np.int32(16),))
    fields = pgjax.config.to_dict(config)
    assert type(fields["lr"]) is float and type(fields["num_envs"]) is int
    assert fields["hidden"] == [16] and type(fields["hidden"][0]) is int
    assert pgjax.config.from_dict(json.loads(json.dumps(fields))).num_envs == 8
