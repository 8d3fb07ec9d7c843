"""Running a sweep's chunks: the vmapped batch program, its compile cache, and the per-run rows.

A chunk's runs share their static fields, so one compiled program trains them all:
`jax.vmap` of `train` over the runs' numeric leaves and keys, the runs axis sharded over the
local devices and padded to the group's batch size (a run's numbers do not depend on its
batch-mates). The program is the only jitted code of a sweep; everything else here is host-side.
"""

import socket
import time
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pgjax.config import LEAVES, Config
from pgjax.signals import SWEEP_RESUME, Stopped, computed
from pgjax.sweep_claims import this_holder
from pgjax.sweep_files import run_row
from pgjax.sweep_spec import Chunk, Plan, static_key
from pgjax.train import diverged, train


def batch_program(static: Config, components: dict):
    """`program(leaves, key_data) -> (Metrics [R, U], params finite [R])` for one static group.

    Args of the program:
      leaves: {field: [R] float32} per LEAVES field, the runs' numeric hyperparameters.
      key_data: [R, 2] uint32, each run's `jax.random.key_data` of its seed key.

    The components (`pgjax.components.build` keywords) are closed over; those not given are
    built inside the trace from each run's config, so traced leaves (init_log_std) reach them.
    """

    def one_run(config: Config, key: jax.Array):
        return train(config, key, **components)

    def program(leaves: dict, key_data: jax.Array):
        config = static.replace(**leaves)
        keys = jax.random.wrap_key_data(key_data)
        state, metrics = jax.vmap(one_run)(config, keys)
        return metrics, diverged(metrics.loss, metrics.grad_norm, state.params)

    return program


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
        """(the compiled, sharded program, its compile seconds), compiled on first use."""
        key = (static_key(static), batch, devices, components_key(components))
        if key not in self._compiled:
            self._compiled[key] = _compile(static, batch, devices, components)
        return self._compiled[key]


def _compile(static: Config, batch: int, devices: tuple, components: dict):
    mesh = Mesh(np.array(devices), ("runs",))
    runs_axis = NamedSharding(mesh, PartitionSpec("runs"))
    fn = jax.jit(batch_program(static, components), in_shardings=runs_axis,
                 out_shardings=runs_axis)
    leaves = {n: jax.ShapeDtypeStruct((batch,), np.float32) for n in LEAVES}
    key_data = jax.ShapeDtypeStruct((batch, 2), np.uint32)
    t = time.perf_counter()
    compiled = fn.lower(leaves, key_data).compile()
    return compiled, time.perf_counter() - t


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
) -> dict:
    """Train one chunk's runs in one program call.

    Args:
      plan: the sweep's plan.
      chunk: which runs.
      key_data: [seeds, 2] uint32 key data of `pgjax.train.seed_keys(spec.seed, spec.seeds)`.
      devices: the local devices the runs axis is sharded over.
      programs: the sweep's compile cache (default: a fresh one, compiling this chunk's program).
      components: `pgjax.components.build` keywords (env=, policy=, ...) given to the sweep.
      worker: who ran it, for the record and rows (default "host:pid").
      sweep: the `sweep_files.sweep_id` of the sweep, kept in the record.
      requested: `signals.stop_requests`' list: once it holds a signal, the chunk is dropped
        and `signals.Stopped` raised.

    Returns:
      {"record": the chunk's record (rows, batch, devices, timings), "arrays": per-run metrics
      {name: [runs, updates]}, diverged [runs] (`pgjax.train.diverged`) and run ids [runs]}.
    """
    programs = Programs() if programs is None else programs
    components = components or {}
    worker = worker or this_holder().worker
    static = plan.groups[chunk.group]
    batch = padded(plan.group_batch[chunk.group], len(devices))
    program, compile_seconds = programs.get(static, batch, devices, components)
    idx = np.array(list(chunk.runs) + [chunk.runs[-1]] * (batch - len(chunk.runs)))
    cfg_ids = np.array([plan.runs[r][0] for r in idx])
    seed_ids = np.array([plan.runs[r][1] for r in idx])
    leaves = {
        n: np.array([getattr(plan.configs[c], n) for c in cfg_ids], np.float32) for n in LEAVES
    }
    t = time.perf_counter()
    metrics, bad = out = program(leaves, key_data[seed_ids])
    if not computed(out, requested):  # a signal: the chunk is dropped
        raise Stopped(requested[0], resume=SWEEP_RESUME)
    output_devices = len(bad.sharding.device_set)
    metrics, bad = jax.device_get((metrics, bad))
    wall = time.perf_counter() - t
    n = len(chunk.runs)
    arrays = {k: np.asarray(v)[:n] for k, v in metrics._asdict().items()}
    arrays["diverged"] = np.asarray(bad)[:n]
    arrays["run"] = np.asarray(chunk.runs)
    rows = [
        run_row(plan, run, chunk, {k: arrays[k][i] for k in arrays if k != "run"}, wall, worker)
        for i, run in enumerate(chunk.runs)
    ]
    record = {
        "chunk": chunk.index,
        "runs": list(chunk.runs),
        "rows": rows,
        "batch": batch,
        "devices": len(devices),
        "output_devices": output_devices,  # devices the outputs' sharding spans
        "wall_seconds": wall,
        "compile_seconds": compile_seconds,
        "worker": worker,
        "host": socket.gethostname(),
        **({} if sweep is None else {"sweep_sha256": sweep}),
    }
    return {"record": record, "arrays": arrays}
