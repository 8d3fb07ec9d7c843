"""A sweep's chunks trained: the vmapped batch programs, their compile cache, the per-run rows.

The programs are the only jitted code of a sweep: `jax.vmap` of `init_state`, then of
`train_chunk` over about `PIECES` pieces of updates (each piece trained is progress that renews
the worker's lease), the runs axis sharded over the local devices and padded to the group's
batch size, so that a run's numbers do not depend on its batch-mates.
"""

import socket
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pgjax.components import build
from pgjax.config import LEAVES, Config
from pgjax.signals import SWEEP_RESUME, Stopped, computed
from pgjax.sweep.claims import this_holder
from pgjax.sweep.files import FORMAT, run_row
from pgjax.sweep.spec import Chunk, Plan, static_key
from pgjax.train import diverged, init_state, train_chunk

PIECES = 4  # pieces of updates per chunk (each at least a run's chunk): progress for the lease


def batch_programs(static: Config, components: dict, num_updates: int):
    """(init, step) for one static group: `init(leaves, key_data) -> TrainState [R]` and
    `step(leaves, state) -> (state, Metrics [R, num_updates])` (`train` is init, then step
    repeated), over the runs' LEAVES {field: [R] float32} and key data [R, 2] uint32. The
    components given are closed over; the others are built in the trace from each run's config,
    so traced leaves (init_log_std) reach them."""

    def parts(config: Config):
        return build(config, validate=False, **components)

    def init(leaves: dict, key_data: jax.Array):
        keys = jax.random.wrap_key_data(key_data)
        return jax.vmap(lambda c, k: init_state(c, k, parts(c)))(static.replace(**leaves), keys)

    def step(leaves: dict, state):
        return jax.vmap(lambda c, s: train_chunk(c, s, num_updates, parts(c)))(
            static.replace(**leaves), state)

    return init, step


def components_key(components: dict) -> tuple:
    """A hashable key of the components: each by value when hashable, else by identity."""

    def one(x: Any):
        try:
            hash(x)
        except TypeError:
            return ("id", id(x))
        return ("value", x)

    return tuple(sorted((name, one(x)) for name, x in components.items()))


class Programs:
    """Compiled batch programs of one `sweep` call, keyed by static fields, batch size, devices
    and components. Not shared between calls: a sweep's compiles are its own."""

    def __init__(self):
        self._compiled: dict = {}

    def get(self, static: Config, batch: int, devices: tuple, components: dict):
        """`_compile`'s (init, step, updates per step, compile seconds), on first use."""
        key = (static_key(static), batch, devices, components_key(components))
        if key not in self._compiled:
            self._compiled[key] = _compile(static, batch, devices, components)
        return self._compiled[key]


def _compile(static: Config, batch: int, devices: tuple, components: dict):
    """(init, step, updates per step, compile seconds), compiled and their memory checked."""
    from pgjax.experiment import check_memory, chunk_length  # orbax, tqdm: on first use

    mesh = Mesh(np.array(devices), ("runs",))
    runs_axis = NamedSharding(mesh, PartitionSpec("runs"))
    n = max(chunk_length(static.num_updates), chunk_length(static.num_updates, PIECES))
    init, step = (jax.jit(f, in_shardings=runs_axis, out_shardings=runs_axis)
                  for f in batch_programs(static, components, n))
    leaves = {name: jax.ShapeDtypeStruct((batch,), np.float32) for name in LEAVES}
    key_data = jax.ShapeDtypeStruct((batch, 2), np.uint32)
    t = time.perf_counter()
    init = init.lower(leaves, key_data).compile()
    step = step.lower(leaves, init.out_info).compile()
    check_memory([init, step], len(devices))
    return init, step, n, time.perf_counter() - t


def padded(n: int, devices: int) -> int:
    """n rounded up to a multiple of the device count."""
    return -(-n // devices) * devices


def run_chunk(
    plan: Plan,
    chunk: Chunk,
    key_data: np.ndarray,
    devices: tuple,
    *,
    programs: Programs | None = None,
    components: dict | None = None,
    worker: str | None = None,
    sweep: str | None = None,
    requested: list | tuple = (),
    progress: Callable[[], None] = lambda: None,
) -> dict:
    """Train one chunk's runs together: {"record": its record (rows, batch, devices, timings),
    "arrays": per-run metrics {name: [runs, updates]}, diverged [runs] and run ids [runs]}.

    `key_data`: [seeds, 2] uint32 of `pgjax.train.seed_keys(spec.seed, spec.seeds)`; `devices`:
    those the runs axis is sharded over; `programs`: the sweep's compile cache; `components`:
    `pgjax.components.build` keywords; `worker`: who ran it (default "host:pid"); `sweep`: the
    `files.sweep_id` kept in the record; `requested`: `signals.stop_requests`' list, once it
    holds a signal the chunk is dropped (`signals.Stopped`); `progress`: called once the
    programs are compiled and as each piece of updates is trained.
    """
    programs = Programs() if programs is None else programs
    worker = worker or this_holder().worker
    static = plan.groups[chunk.group]
    batch = padded(plan.group_batch[chunk.group], len(devices))
    init, step, n, compile_seconds = programs.get(static, batch, devices, components or {})
    progress()
    padding = [chunk.runs[-1]] * (batch - len(chunk.runs))
    configs, seeds = zip(*(plan.runs[r] for r in (*chunk.runs, *padding)), strict=True)
    leaves = {name: np.array([getattr(plan.configs[c], name) for c in configs], np.float32)
              for name in LEAVES}
    t = time.perf_counter()
    metrics, bad = _train(init, step, static.num_updates // n, leaves, key_data[list(seeds)],
                          requested, progress)
    output_devices = len(bad.sharding.device_set)  # devices the outputs' sharding spans
    metrics, bad = jax.device_get((metrics, bad))
    wall = time.perf_counter() - t
    arrays = {k: np.asarray(v)[:len(chunk.runs)] for k, v in metrics._asdict().items()}
    arrays["diverged"] = np.asarray(bad)[:len(chunk.runs)]
    rows = [run_row(plan, run, chunk, {k: a[i] for k, a in arrays.items()}, wall, worker)
            for i, run in enumerate(chunk.runs)]
    arrays["run"] = np.asarray(chunk.runs)
    record = {"format": FORMAT, "chunk": chunk.index, "runs": list(chunk.runs), "rows": rows,
              "batch": batch, "devices": len(devices), "output_devices": output_devices,
              "wall_seconds": wall, "compile_seconds": compile_seconds, "worker": worker,
              "host": socket.gethostname(), **({} if sweep is None else {"sweep_sha256": sweep})}
    return {"record": record, "arrays": arrays}


def _train(init, step, pieces: int, leaves: dict, key_data: np.ndarray, requested, progress):
    """(metrics [R, updates], diverged [R]) of `pieces` steps after init, each piece queued at
    once and waited for in turn: a signal requested meanwhile drops the chunk (`Stopped`)."""
    state, out = init(leaves, key_data), []
    for _ in range(pieces):
        state, metrics = step(leaves, state)
        out.append(metrics)
    for metrics in out:
        if not computed(metrics, requested):
            raise Stopped(requested[0], resume=SWEEP_RESUME)
        progress()
    metrics = jax.tree.map(lambda *xs: jnp.concatenate(xs, 1), *out)
    return metrics, diverged(metrics.loss, metrics.grad_norm, state.params)
