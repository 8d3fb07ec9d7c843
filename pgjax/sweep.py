"""Hyperparameter sweeps: configs × seeds, vmapped into one program per static group and sharded.

A spec (a YAML file or a dict) holds base config fields, a `grid:` and/or a `random:` section,
`seeds`, `seed` and `chunk_runs`:

    env: CartPole-v1
    total_timesteps: 256000
    grid:                       # cartesian product; static fields here split programs
      lr: [0.003, 0.01, 0.03]
      hidden: [[32, 32], [64, 64]]
    random:                     # num_samples draws, crossed with every grid point
      num_samples: 4
      ent_coef: {uniform: [0.0, 0.02]}
      gamma: {choice: [0.95, 0.99]}
      max_grad_norm: {log_uniform: [0.1, 10.0]}
    seeds: 16                   # seed i uses pgjax.train.seed_keys(seed, seeds)[i]
    seed: 0
    chunk_runs: 256             # most runs in one compiled batch (device memory); default: all

A run is one config × one seed. Runs whose static fields (shapes, loop lengths) agree form a
group and are trained by one compiled program: `jax.vmap(train)` over their numeric leaves and
keys, the runs axis sharded over the local devices (`NamedSharding`, padded to a multiple of the
device count). Every chunk of a group is padded to the same batch size, so a run's numbers do not
depend on which runs share its batch (bitwise; checked on CPU and on an H200); a different batch
size or device count can move the last bits (XLA picks loop splits and summation orders by shape:
about 1e-8 on CPU, up to 1e-6 on GPU).

Components: `sweep(spec, out, env=..., policy=..., value=..., estimator=...)` trains every run
with the objects given (see `pgjax.components.build`); the spec's strings make the rest. An env
component names every config's `env` field, so it need not be a registered gymnax id. Every
distinct case is built and checked before any work; sweep.json records which were given.

Files under `out_dir`: `sweep.json` (the normalized spec, the components given, provenance),
`chunks/chunk-NNNNNN.npz` (per-run metrics [runs, updates]) and `.json` (the chunk's table rows;
its presence marks the chunk done, so a rerun skips it), `results.csv` (one row per run),
`summary.csv` / `summary.json` (configs ranked by the IQM of the final return, 95%
stratified-bootstrap CIs over seeds) and `summary.png`. With `jax.distributed`, process p runs
chunks p, p + P, ... and all processes share `out_dir` (a shared filesystem); process 0 merges
the table once every chunk is recorded.

Per run: final return (mean return of the episodes that finished in the last update), AUC (the
mean of that return over updates, skipping the NaN updates before the first episode ends), and
`diverged` (a non-finite loss or gradient norm at any update, or non-finite final parameters).

The steps live in their own modules, each below the next: `sweep_spec` (spec, sampling, plan),
`sweep_run` (the batch program, its compile cache, rows), `sweep_files` (sweep.json, chunks),
`sweep_report` (ranking, figure, text), `distributed` (multi-process start-up).
"""

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from pgjax.components import as_env
from pgjax.distributed import init_distributed
from pgjax.estimators import Estimator
from pgjax.sweep_files import describe_components, load_record, prepare_out_dir, save_chunk
from pgjax.sweep_report import format_sweep, merge, summarize
from pgjax.sweep_run import Programs, run_chunk
from pgjax.sweep_spec import (
    Chunk,
    Plan,
    Spec,
    SpecError,
    check_plan,
    make_plan,
    parse_spec,
    static_key,
)
from pgjax.train import seed_keys

__all__ = [
    "Chunk",
    "Plan",
    "Programs",
    "Spec",
    "SpecError",
    "check_plan",
    "format_sweep",
    "init_distributed",
    "make_plan",
    "parse_spec",
    "run_chunk",
    "static_key",
    "summarize",
    "sweep",
]


def sweep(
    spec: "str | os.PathLike | dict",
    out_dir: "str | os.PathLike",
    *,
    env: Any = None,
    policy: nn.Module | None = None,
    value: nn.Module | None = None,
    estimator: Estimator | None = None,
    progress: bool = False,
    distributed: bool = False,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    on_chunk: Callable[[dict], None] | None = None,
    poll_seconds: float = 1.0,
):
    """Run (or resume) a sweep and return its results table (a pandas DataFrame, one row per run).

    Args:
      spec: a YAML path or a dict (see the module docstring).
      out_dir: where chunks, results.csv and the summary go; rerunning with the same spec,
        components and out_dir skips the chunks already recorded there.
      env: a `pgjax.Env`, a gymnax Environment or (Environment, params) for every run; its
        name becomes every config's `env` field. Default: `Env(config.env)`.
      policy: a flax module, obs -> distribution, for every run (see `pgjax.components.build`).
      value: a flax module, obs -> V(s), for every run.
      estimator: an estimator (see `pgjax.estimators`) for every run.
      progress: show a progress bar over this process's runs.
      distributed: call `jax.distributed.initialize` first (before any other JAX work in this
        process); coordinator_address / num_processes / process_id are passed through, None values
        are auto-detected by JAX (SLURM, Open MPI, ...). Implied by any of them being given.
        See `pgjax.distributed` for components built before the call.
      on_chunk: called with each finished chunk's record after it is saved.
      poll_seconds: how often a process that finished its share looks for the others' chunks.

    Returns:
      The merged results table, identical in every process, sorted by run id.

    Raises:
      SpecError: a bad spec, component or out_dir, before any training.
    """
    import pandas as pd

    spec = parse_spec(spec)
    if distributed or coordinator_address or num_processes is not None or process_id is not None:
        init_distributed(coordinator_address, num_processes, process_id)
    given = _given(env=env, policy=policy, value=value, estimator=estimator)
    plan = make_plan(spec, env=given["env"].name if "env" in given else None)
    check_plan(plan, given)
    out_dir = Path(out_dir)
    prepare_out_dir(out_dir, spec, describe_components(given))
    _run_share(out_dir, plan, given, progress=progress, on_chunk=on_chunk)
    records = _wait_for_records(out_dir, plan, poll_seconds)
    return pd.DataFrame(merge(out_dir, plan, records, write=jax.process_index() == 0))


def _given(**components) -> dict:
    """The components given (not None), the env as a `pgjax.Env`."""
    given = {name: x for name, x in components.items() if x is not None}
    if "env" in given:
        try:
            given["env"] = as_env(given["env"])
        except ValueError as e:
            raise SpecError(str(e)) from None
    return given


def _run_share(out_dir: Path, plan: Plan, given: dict, *, progress: bool, on_chunk) -> None:
    """Train and save this process's chunks that are not recorded yet (chunk i % processes)."""
    from tqdm.auto import tqdm

    process, processes = jax.process_index(), jax.process_count()
    devices = tuple(jax.local_devices())
    key_data = np.asarray(jax.random.key_data(seed_keys(plan.spec.seed, plan.spec.seeds)))
    programs = Programs()
    mine = [c for c in plan.chunks if c.index % processes == process]
    todo = [c for c in mine if load_record(out_dir, c) is None]
    with tqdm(total=sum(len(c.runs) for c in todo), unit="run", disable=not progress,
              desc=f"sweep p{process}" if processes > 1 else "sweep", dynamic_ncols=True) as bar:
        for chunk in todo:
            result = run_chunk(plan, chunk, key_data, devices, programs=programs,
                               components=given)
            save_chunk(out_dir, result)
            bar.update(len(chunk.runs))
            if on_chunk is not None:
                on_chunk(result["record"])


def _wait_for_records(out_dir: Path, plan: Plan, poll_seconds: float) -> dict:
    """chunk index -> record of every chunk, polling for those other processes still run."""
    records = {}
    while True:
        for chunk in plan.chunks:
            if chunk.index not in records and (record := load_record(out_dir, chunk)):
                records[chunk.index] = record
        if len(records) == len(plan.chunks):
            return records
        time.sleep(poll_seconds)
