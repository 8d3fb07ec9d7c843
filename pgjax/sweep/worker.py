"""One worker of a sweep: claim, train and record chunks until every chunk is recorded."""

import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from pgjax.components import describe_given
from pgjax.signals import SWEEP_RESUME, Stopped, stop_requests
from pgjax.sweep import claims
from pgjax.sweep.claims import LEASE_SECONDS, check_lease
from pgjax.sweep.files import load_record, save_chunk, set_aside, span, sweep_id
from pgjax.sweep.run import Programs, run_chunk
from pgjax.sweep.spec import Chunk, Plan
from pgjax.train import seed_keys


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
    """One worker: claim, train and record chunks until every chunk of the plan is recorded;
    returns the indices of those it recorded.

    out_dir is the sweep directory (`files.prepare_out_dir` done); chunks are recorded and read
    with the `sweep_id` of `plan` and `given` (the components), never the one sweep.json holds.
    While live workers hold every chunk left, it waits for them (taking over any whose holder
    dies) every `poll_seconds`, unless `exit_when_idle`: then one idle worker, the standby,
    waits, and the others return. `worker`: its name in claims, records and rows (default
    "host:pid"); `on_chunk`: called with each record it saved; `log`: with a line per chunk
    recorded, taken over or dropped (a damaged chunk set aside is reported on stderr).
    """
    from tqdm.auto import tqdm

    check_lease(lease_seconds)
    me = claims.this_holder(worker)
    with stop_requests("once the chunk in progress is recorded or dropped") as requested, \
            claims.Heartbeat(me, lease_seconds) as heartbeat, \
            tqdm(total=len(plan.runs), unit="run", disable=not progress, desc="sweep",
                 dynamic_ncols=True) as bar:
        loop = _Loop(out_dir, plan, given, heartbeat, requested, log or (lambda line: None))
        while not requested:
            state = claims.scan(loop.chunks_dir)
            todo = loop.todo(state)
            bar.update(len(plan.runs) - sum(len(c.runs) for c in todo) - bar.n)
            if not todo:
                return loop.ran
            chunk, claim = loop.claim_next(todo, state)
            if claim is not None:
                if (record := loop.train(chunk, claim)) is not None and on_chunk is not None:
                    on_chunk(record)
            elif not loop.wait(todo, state, exit_when_idle, poll_seconds):
                return loop.ran
        raise Stopped(requested[0], resume=SWEEP_RESUME)  # its claims are released on the way out


class _Loop:
    """The steps of `work`, and what it knows: the chunks it found recorded (a record is never
    replaced, so each is read once), the groups it compiled and the chunks it recorded."""

    def __init__(self, out_dir: Path, plan: Plan, given: dict, heartbeat: claims.Heartbeat,
                 requested: list, log: Callable[[str], None]):
        self.out_dir, self.chunks_dir, self.plan = out_dir, out_dir / "chunks", plan
        self.heartbeat, self.requested, self.log = heartbeat, requested, log
        self.sweep = sweep_id(plan.spec.to_json(), describe_given(given))  # never the one on disk
        key_data = np.asarray(jax.random.key_data(seed_keys(plan.spec.seed, plan.spec.seeds)))
        self.train_chunk = functools.partial(
            run_chunk, plan, key_data=key_data, devices=tuple(jax.local_devices()),
            programs=Programs(), components=given, worker=heartbeat.me.worker, sweep=self.sweep,
            requested=requested, progress=heartbeat.progress)
        self.recorded, self.compiled, self.ran = set(), set(), []

    def todo(self, state: claims.Scan) -> list[Chunk]:
        """The chunks not recorded yet."""
        self.recorded |= {c.index for c in self.plan.chunks if c.index in state.recorded
                          and c.index not in self.recorded
                          and load_record(self.out_dir, c, self.plan, self.sweep)[0] is not None}
        return [c for c in self.plan.chunks if c.index not in self.recorded]

    def claim_next(self, todo: list[Chunk], state: claims.Scan):
        """(chunk, claim) of the first chunk this worker could claim, or (None, None): unclaimed
        chunks first, then those whose holders may be dead; within each, chunks of a group
        whose program it has compiled."""
        def order(chunk: Chunk):
            return (claims.chunk_name(chunk.index) in state.attempts,
                    chunk.group not in self.compiled, chunk.index)

        for chunk in sorted(todo, key=order):
            name = claims.chunk_name(chunk.index)
            claim = claims.acquire(self.chunks_dir, name, state.attempts.get(name, 0),
                                   self.heartbeat.me, self.heartbeat.lease_seconds)
            if claim is not None:
                return chunk, claim
        return None, None

    def train(self, chunk: Chunk, claim: claims.Claim) -> dict | None:
        """Train and save a claimed chunk (its damaged files set aside first, one line on
        stderr), then release the claim: the record, or None when another worker recorded or
        claimed it."""
        self.heartbeat.hold(claim)
        try:
            record = self._train(chunk, claim)
        finally:
            self.heartbeat.release(claim)
        self.compiled.add(chunk.group)
        if record is not None:
            self.recorded.add(chunk.index)
            self.ran.append(chunk.index)
        return record

    def _train(self, chunk: Chunk, claim: claims.Claim) -> dict | None:
        recorded, damaged = load_record(self.out_dir, chunk, self.plan, self.sweep)
        if recorded is not None or claims.superseded(claim):
            return None  # recorded, or claimed again, between the scan and the claim
        if damaged:
            print(f"pgjax: chunk {chunk.index} of {self.out_dir} is damaged; set aside as "
                  f"{set_aside(self.out_dir, chunk.index)}, training it again", file=sys.stderr,
                  flush=True)
        if claim.attempt > 1:
            self.log(f"chunk {chunk.index}: taking over from attempt {claim.attempt - 1}")
        started = time.time()
        result = self.train_chunk(chunk)
        result["record"].update(attempt=claim.attempt, started=started)
        if self.heartbeat.lost(claim) or claims.superseded(claim):
            self.log(f"chunk {chunk.index}: taken over while this worker trained it; result "
                     f"dropped")
            return None
        if not save_chunk(self.out_dir, result):
            self.log(f"chunk {chunk.index}: already recorded by another worker; result dropped")
            return None
        record = result["record"]
        self.log(f"chunk {chunk.index} recorded: {len(chunk.runs)} runs, attempt "
                 f"{claim.attempt}, {record['wall_seconds']:.1f} s")
        return record

    def wait(self, todo: list[Chunk], state: claims.Scan, exit_when_idle: bool,
             poll_seconds: float) -> bool:
        """Wait up to poll_seconds while other workers hold the chunks left; False instead
        where `exit_when_idle` and another worker is the standby."""
        if exit_when_idle and not self.heartbeat.holds(claims.STANDBY):
            standby = claims.acquire(self.chunks_dir, claims.STANDBY,
                                     state.attempts.get(claims.STANDBY, 0), self.heartbeat.me,
                                     self.heartbeat.lease_seconds)
            left = span([c.index for c in todo])
            if standby is None:
                self.log(f"nothing left to claim; the standby waits for chunks {left}")
                return False
            self.heartbeat.hold(standby)
            self.log(f"standby: waiting for chunks {left} held by other workers")
        deadline = time.monotonic() + poll_seconds
        while not self.requested and time.monotonic() < deadline:
            time.sleep(min(0.2, poll_seconds))
        return True
