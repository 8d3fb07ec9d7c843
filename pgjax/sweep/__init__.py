"""Hyperparameter sweeps: configs × seeds, vmapped into one program per static group and sharded.

A spec (a YAML, JSON or TOML file, or a dict) holds base config fields, a `grid:` and/or a
`random:` section, `seeds`, `seed` and `chunk_runs`:

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
depend on which runs share its batch (bitwise; checked on CPU and on an H200) nor on which
worker, or how many, trained it (bitwise on CPU; workers with the same device count compile the
same program); a different batch size or device count can move the last bits (XLA picks loop
splits and summation orders by shape: about 1e-8 on CPU, up to 1e-6 on GPU).

Components: `sweep(spec, out, env=..., policy=..., value=..., estimator=...)` trains every run
with the objects given (see `pgjax.components.build`); the spec's strings make the rest. An env
component names every config's `env` field, so it need not be a registered gymnax id. Every
distinct case is built and checked before any work; sweep.json records which were given.

Files under `out_dir`: `sweep.json` (the normalized spec, the components given, provenance),
`chunks/chunk-NNNNNN.npz` (per-run metrics [runs, updates]) and `.json` (the chunk's table rows),
`results.csv` (one row per run), `summary.csv` / `summary.json` (configs ranked by the IQM of the
final return, 95% stratified-bootstrap CIs over seeds) and `summary.png`. A chunk is recorded when
both its files are present and readable (`files.load_record`, for the workers, the merge and
`--status` alike): a rerun skips it. A damaged chunk (a record whose files are cut short or
unreadable) is reported in one line, its files renamed to `chunks/damaged-chunk-NNNNNN.*` (kept),
and trained again: by the worker that claims it, or, when a merge finds it, by the next run.

Workers: any number of processes, on any hosts that share `out_dir`, may work on one sweep at
once. Each claims unrecorded chunks one at a time (`sweep.claims`: a claim file per chunk with a
lease its heartbeat renews), trains and records them, and takes over a chunk whose holder died
once the lease runs out; no chunk is recorded twice. `sweep` is one such worker that then waits
for the chunks others hold and merges the table; `pgjax.sweep.launch` starts many (a SLURM job
array or local processes, through submitit) and merges once all are done (`merge_sweep`).

Per run: final return (mean return of the episodes that finished in the last update), AUC (the
mean of that return over updates, skipping the NaN updates before the first episode ends), and
`diverged` (a non-finite loss or gradient norm at any update, or non-finite final parameters).

The steps live in their own modules, each below the next: `sweep.claims` (who trains which
chunk), `sweep.spec` (spec, sampling, plan), `sweep.run` (the batch program, its compile cache,
rows), `sweep.files` (sweep.json, chunks), `sweep.report` (ranking, figure, text); this module
(the worker loop, merge, status); `sweep.launch` (workers on a scheduler).
"""

import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from pgjax.components import as_env, describe_given
from pgjax.estimators import Estimator
from pgjax.signals import SWEEP_RESUME, Stopped, stop_requests
from pgjax.sweep import claims
from pgjax.sweep.files import (
    IncompleteSweep,
    held_sweep,
    load_record,
    load_records,
    prepare_out_dir,
    save_chunk,
    set_aside,
    span,
    sweep_id,
)
from pgjax.sweep.report import format_sweep, merge, summarize
from pgjax.sweep.run import Programs, run_chunk
from pgjax.sweep.spec import (
    Chunk,
    Plan,
    Spec,
    SpecError,
    check_plan,
    make_plan,
    parse_spec,
    planned,
    static_key,
)
from pgjax.train import seed_keys

__all__ = [
    "Chunk",
    "IncompleteSweep",
    "Plan",
    "Programs",
    "Spec",
    "SpecError",
    "check_plan",
    "format_sweep",
    "make_plan",
    "merge_sweep",
    "parse_spec",
    "run_chunk",
    "static_key",
    "summarize",
    "sweep",
    "sweep_status",
    "work",
]

LEASE_SECONDS = 60.0
LEASE_LIMIT = 1e9  # seconds (~30 years): a lease's expiry must stay a finite timestamp


def sweep(
    spec: "Plan | str | os.PathLike | dict",
    out_dir: "str | os.PathLike",
    *,
    env: Any = None,
    policy: nn.Module | None = None,
    value: nn.Module | None = None,
    estimator: Estimator | None = None,
    progress: bool = False,
    on_chunk: Callable[[dict], None] | None = None,
    lease_seconds: float = LEASE_SECONDS,
    poll_seconds: float = 1.0,
):
    """Run (or resume) a sweep in this process and return its results table (a pandas DataFrame,
    one row per run).

    Other workers (`pgjax.sweep.launch`, or `sweep` in other processes) may work on the same
    out_dir at the same time: this process trains the chunks nobody holds, waits for those others
    hold (taking over any whose holder dies), and merges the table.

    Args:
      spec: a YAML, JSON or TOML path, or a dict (see the module docstring), or its `Plan`
        (`spec.planned`, made with the same components).
      out_dir: where chunks, results.csv and the summary go; rerunning with the same spec,
        components and out_dir skips the chunks already recorded there.
      env: a `pgjax.Env`, a gymnax Environment or (Environment, params) for every run; its
        name becomes every config's `env` field. Default: `Env(config.env)`.
      policy: a flax module, obs -> distribution, for every run (see `pgjax.components.build`).
      value: a flax module, obs -> V(s), for every run.
      estimator: an estimator (see `pgjax.estimators`) for every run.
      progress: show a progress bar over the sweep's runs.
      on_chunk: called with each chunk's record after this process saved it.
      lease_seconds: how long a claim outlives its holder's last heartbeat (see `sweep.claims`).
      poll_seconds: how often it looks again while other workers hold the chunks left.

    Returns:
      The merged results table, sorted by run id.

    Raises:
      SpecError: a bad spec, component or out_dir, before any training.
    """
    check_lease(lease_seconds)
    given = _given(env=env, policy=policy, value=value, estimator=estimator)
    plan = planned(spec, given)
    out_dir = Path(out_dir)
    with prepare_out_dir(out_dir, plan.spec, describe_given(given), replace_unstarted=True):
        work(out_dir, plan, given, lease_seconds=lease_seconds, poll_seconds=poll_seconds,
             exit_when_idle=False, progress=progress, on_chunk=on_chunk)
        return _merged(out_dir, plan)


def check_lease(lease_seconds: float, name: str = "lease_seconds") -> None:
    """SpecError unless 0 < lease_seconds < LEASE_LIMIT (`name`: how the caller calls it)."""
    if not 0 < lease_seconds < LEASE_LIMIT:
        raise SpecError(f"{name} must be positive and under {LEASE_LIMIT:.0e}, got "
                        f"{lease_seconds}")


def merge_sweep(spec: "Plan | str | os.PathLike | dict", out_dir: "str | os.PathLike"):
    """Write the results table and summary of a sweep whose chunks are all recorded; return it.

    Raises:
      SpecError: out_dir holds no sweep or another spec's.
      IncompleteSweep: chunks are missing (named in its one-line message).
    """
    return _merged(Path(out_dir), _held_plan(spec, Path(out_dir)))


def _held_plan(spec: "Plan | Spec | str | os.PathLike | dict", out_dir: Path) -> Plan:
    """The plan of the sweep that out_dir holds, which must be this spec's: a `Plan` given is
    used as it is unless the sweep was run with an env component (whose name its configs
    take).

    Raises:
      SpecError: out_dir holds no sweep or another spec's.
    """
    plan = spec if isinstance(spec, Plan) else None
    spec = parse_spec(plan.spec if plan else spec)
    env = held_sweep(out_dir, spec).get("components", {}).get("env")
    return plan if plan is not None and env is None else make_plan(spec, env=env)


def sweep_status(spec: "Plan | str | os.PathLike | dict", out_dir: "str | os.PathLike") -> str:
    """Chunks recorded / total, who holds the others and for how long, as text."""
    out_dir = Path(out_dir)
    plan = _held_plan(spec, out_dir)
    state = claims.scan(out_dir / "chunks")
    records, _, damaged = load_records(out_dir, plan)
    done = [c for c in plan.chunks if c.index in records]
    lines = [f"{len(done)} of {len(plan.chunks)} chunks recorded "
             f"({sum(len(c.runs) for c in done)} of {len(plan.runs)} runs) in {out_dir}"]
    now, waiting, me = time.time(), [], claims.this_holder()
    for chunk in plan.chunks:
        if chunk.index in records:
            continue
        name = claims.chunk_name(chunk.index)
        claim = claims.read(out_dir / "chunks", name, state.attempts.get(name, 0))
        if claim is None:
            if chunk.index not in damaged:
                waiting.append(chunk.index)
            continue
        left = claim["expires"] - now
        lease = (f"lease expired {-left:.0f} s ago: the next worker takes it over" if left <= 0
                 else "its process is gone: the next worker takes it over"
                 if claims.is_dead(claim, me, now) else f"lease {left:.0f} s left")
        lines.append(f"chunk {chunk.index}: {claim.get('worker', '?')} on "
                     f"{claim.get('host', '?')}, attempt {state.attempts[name]}, {lease}")
    if waiting:
        lines.append(f"not started: chunks {span(waiting)}")
    if damaged:
        lines.append(f"damaged: chunks {span(damaged)} (the next run of the sweep sets them "
                     f"aside and trains them again)")
    if len(done) == len(plan.chunks):
        merged = (out_dir / "results.csv").exists()
        lines.append("merged: results.csv" if merged else "complete; not merged yet (--merge)")
    return "\n".join(lines)


def work(
    out_dir: Path,
    plan: Plan,
    given: dict,
    *,
    worker: str | None = None,
    lease_seconds: float = LEASE_SECONDS,
    poll_seconds: float = 1.0,
    exit_when_idle: bool = True,
    progress: bool = False,
    on_chunk: Callable[[dict], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[int]:
    """One worker: claim, train and record chunks until every chunk of the plan is recorded.

    When every chunk left is held by a live worker, this one waits for them (and takes over any
    whose holder dies), unless `exit_when_idle`: then only one idle worker, the standby, waits,
    and the others return.

    Args:
      out_dir: the sweep directory (`prepare_out_dir` done). Chunks are recorded and read
        with the `sweep_id` of `plan` and `given`, never the one sweep.json holds.
      plan: the sweep's plan.
      given: the components (`pgjax.components.build` keywords).
      worker: this worker's name in claims, records and rows (default "host:pid").
      lease_seconds: claims outlive the last heartbeat by this long.
      poll_seconds: how often an idle worker looks again.
      exit_when_idle: return when nothing is left to claim and another worker is the standby.
      progress: a progress bar over the sweep's runs.
      on_chunk: called with each record this worker saved.
      log: called with a line per chunk recorded, taken over or dropped. A damaged chunk it sets
        aside is reported on stderr.

    Returns:
      The indices of the chunks this worker recorded.
    """
    from tqdm.auto import tqdm

    check_lease(lease_seconds)
    me = claims.this_holder(worker)
    log = log or (lambda line: None)
    chunks_dir = out_dir / "chunks"
    devices = tuple(jax.local_devices())
    key_data = np.asarray(jax.random.key_data(seed_keys(plan.spec.seed, plan.spec.seeds)))
    ours = sweep_id(plan.spec.to_json(), describe_given(given))  # never the id on disk
    train_chunk = functools.partial(run_chunk, plan, key_data=key_data, devices=devices,
                                    programs=Programs(), components=given, worker=me.worker,
                                    sweep=ours)
    compiled, ran = set(), []
    recorded = set()  # chunks found recorded: a record is never replaced, so each is read once
    with stop_requests("once the chunk in progress is recorded or dropped") as requested, \
            claims.Heartbeat(me, lease_seconds) as heartbeat, \
            tqdm(total=len(plan.runs), unit="run", disable=not progress, desc="sweep",
                 dynamic_ncols=True) as bar:
        train_chunk = functools.partial(train_chunk, requested=requested,
                                        progress=heartbeat.progress)
        while True:
            if requested:  # the chunks this worker held are released on the way out
                raise Stopped(requested[0], resume=SWEEP_RESUME)
            state = claims.scan(chunks_dir)
            recorded |= {c.index for c in plan.chunks if c.index in state.recorded - recorded
                         and load_record(out_dir, c, plan, ours)[0] is not None}
            todo = [c for c in plan.chunks if c.index not in recorded]
            bar.update(len(plan.runs) - sum(len(c.runs) for c in todo) - bar.n)
            if not todo:
                return ran
            chunk, claim = _claim_next(todo, state, compiled, chunks_dir, me, lease_seconds)
            if claim is not None:
                heartbeat.hold(claim)
                try:
                    record = _train(out_dir, plan, chunk, claim, heartbeat, train_chunk, log,
                                    ours)
                finally:
                    heartbeat.release(claim)
                compiled.add(chunk.group)
                if record is not None:
                    recorded.add(chunk.index)
                    ran.append(chunk.index)
                    if on_chunk is not None:
                        on_chunk(record)
                continue
            if exit_when_idle and not heartbeat.holds(claims.STANDBY):
                standby = claims.acquire(chunks_dir, claims.STANDBY,
                                         state.attempts.get(claims.STANDBY, 0), me, lease_seconds)
                if standby is None:
                    log(f"nothing left to claim; the standby waits for chunks {span(_ids(todo))}")
                    return ran
                heartbeat.hold(standby)
                log(f"standby: waiting for chunks {span(_ids(todo))} held by other workers")
            deadline = time.monotonic() + poll_seconds
            while not requested and time.monotonic() < deadline:
                time.sleep(min(0.2, poll_seconds))


def _ids(chunks: list[Chunk]) -> list[int]:
    return [c.index for c in chunks]


def _claim_next(todo: list[Chunk], state: claims.Scan, compiled: set, chunks_dir: Path,
                me: claims.Holder, lease_seconds: float):
    """(chunk, claim) of the first chunk this worker could claim, or (None, None).

    Unclaimed chunks come first (no file to read), then those whose holders may be dead; within
    each, chunks of a group whose program this worker has compiled.
    """
    def order(chunk: Chunk):
        name = claims.chunk_name(chunk.index)
        return name in state.attempts, chunk.group not in compiled, chunk.index

    for chunk in sorted(todo, key=order):
        name = claims.chunk_name(chunk.index)
        claim = claims.acquire(chunks_dir, name, state.attempts.get(name, 0), me, lease_seconds)
        if claim is not None:
            return chunk, claim
    return None, None


def _train(out_dir: Path, plan: Plan, chunk: Chunk, claim: claims.Claim,
           heartbeat: claims.Heartbeat, train_chunk: Callable[[Chunk], dict],
           log, sweep: str) -> dict | None:
    """Train and save a claimed chunk: its record, or None when another worker recorded it.

    A damaged chunk's files (or those of another sweep than `sweep`) are set aside first (one
    line on stderr).
    """
    recorded, damaged = load_record(out_dir, chunk, plan, sweep)
    if recorded is not None or claims.superseded(claim):
        return None  # recorded, or claimed again, between the scan and the claim
    if damaged:
        print(f"pgjax: chunk {chunk.index} of {out_dir} is damaged; set aside as "
              f"{set_aside(out_dir, chunk.index)}, training it again", file=sys.stderr, flush=True)
    if claim.attempt > 1:
        log(f"chunk {chunk.index}: taking over from attempt {claim.attempt - 1}")
    started = time.time()
    result = train_chunk(chunk)
    result["record"].update(attempt=claim.attempt, started=started)
    if heartbeat.lost(claim) or claims.superseded(claim):
        log(f"chunk {chunk.index}: taken over while this worker trained it; result dropped")
        return None
    if not save_chunk(out_dir, result):
        log(f"chunk {chunk.index}: already recorded by another worker; result dropped")
        return None
    record = result["record"]
    log(f"chunk {chunk.index} recorded: {len(chunk.runs)} runs, attempt {claim.attempt}, "
        f"{record['wall_seconds']:.1f} s")
    return record


def _merged(out_dir: Path, plan: Plan):
    """The merged table (and its files) of a complete sweep; IncompleteSweep otherwise.

    Damaged chunks nobody holds are set aside, so that the next run of the sweep trains them.
    """
    import pandas as pd

    records, missing, damaged = load_records(out_dir, plan)
    if missing:
        moved = [f"{chunk.index} as {aside}" for chunk in plan.chunks if chunk.index in damaged
                 and (aside := _set_aside_unheld(out_dir, plan, chunk)) is not None]
        raise IncompleteSweep(
            f"{out_dir}: {len(missing)} of {len(plan.chunks)} chunks not recorded "
            f"(chunks {span(missing)}"
            + (f"; damaged, set aside: chunk {', chunk '.join(moved)}" if moved else "")
            + "); run the sweep again to train them (--status shows who holds them)"
        )
    claims.remove_stale(out_dir / "chunks")
    return pd.DataFrame(merge(out_dir, plan, records))


def _set_aside_unheld(out_dir: Path, plan: Plan, chunk: Chunk) -> str | None:
    """`set_aside` a damaged chunk under its claim: the new names, or None when a worker holds
    the chunk (it sets the files aside itself) or it is no longer damaged."""
    chunks_dir = out_dir / "chunks"
    name = claims.chunk_name(chunk.index)
    latest = claims.scan(chunks_dir).attempts.get(name, 0)
    claim = claims.acquire(chunks_dir, name, latest, claims.this_holder(), LEASE_SECONDS)
    if claim is None:
        return None
    try:
        return set_aside(out_dir, chunk.index) if load_record(out_dir, chunk, plan)[1] else None
    finally:
        claims.release(claim)


def _given(**components) -> dict:
    """The components given (not None), the env as a `pgjax.Env`."""
    given = {name: x for name, x in components.items() if x is not None}
    if "env" in given:
        try:
            given["env"] = as_env(given["env"])
        except ValueError as e:
            raise SpecError(str(e)) from None
    return given
