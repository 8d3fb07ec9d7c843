"""Claims with leases: which worker trains which chunk of a sweep. Host-only.

    out_dir/chunks/chunk-NNNNNN.claim-A   attempt A at chunk N: worker, host, pid, lease expiry
    out_dir/chunks/standby.claim-A        the one idle worker that waits for the others' chunks

A claim is its attempt's file, created exclusively (`records.create_new`): of two workers racing
for attempt A, one gets it. Attempt A + 1 may supersede A only once A is dead (`is_dead`); the
holder renews its lease while its training makes progress (`Heartbeat`), and checks before
saving that it was not superseded. A chunk's record ends it (`files.save_chunk`). Expiry is the
holder's wall-clock time: the hosts' clocks must agree to well within a lease.
"""

import json
import math
import os
import re
import socket
import threading
import time
from pathlib import Path
from typing import NamedTuple

from pgjax.records import atomic_write, create_new
from pgjax.sweep.spec import SpecError

LEASE_SECONDS = 60.0
LEASE_LIMIT = 1e9  # seconds (~30 years): a lease's expiry must stay a finite timestamp
STANDBY = "standby"
STALL = 4  # a worker's claims outlive its last progress by 4 × its longest wait (`Heartbeat`)
_CLAIM = re.compile(r"^(chunk-(\d{6})|standby)\.claim-(\d+)$")
_RECORD = re.compile(r"^chunk-(\d{6})\.json$")


def check_lease(lease_seconds: float, name: str = "lease_seconds") -> None:
    """SpecError unless 0 < lease_seconds < LEASE_LIMIT (`name`: how the caller calls it)."""
    if not 0 < lease_seconds < LEASE_LIMIT:
        raise SpecError(f"{name} must be positive and under {LEASE_LIMIT:.0e}, got "
                        f"{lease_seconds}")


class Holder(NamedTuple):
    """Who holds a claim: what its claim files say about it."""

    worker: str  # e.g. "job 4242_3", or "host:pid" outside a scheduler
    host: str
    machine: str  # host and boot id: the pid check applies only on the same machine
    pid: int


class Claim(NamedTuple):
    """A claim held by this process."""

    name: str  # "chunk-000003" or "standby"
    attempt: int  # 1, 2, ...: this claim's file is `{name}.claim-{attempt}`
    chunks_dir: Path

    @property
    def path(self) -> Path:
        return claim_path(self.chunks_dir, self.name, self.attempt)


class Scan(NamedTuple):
    """One listing of the chunks folder."""

    recorded: set[int]  # chunk indices whose record exists (readable or not)
    attempts: dict[str, int]  # claim name -> its latest attempt


def this_holder(worker: str | None = None) -> Holder:
    """This process as a claim holder; `worker` defaults to "host:pid"."""
    host = socket.gethostname()
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return Holder(worker or f"{host}:{os.getpid()}", host, f"{host}/{boot}", os.getpid())


def chunk_name(index: int) -> str:
    return f"chunk-{index:06d}"


def claim_path(chunks_dir: Path, name: str, attempt: int) -> Path:
    return chunks_dir / f"{name}.claim-{attempt}"


def scan(chunks_dir: Path) -> Scan:
    """The recorded chunks and the latest attempt of every claim, from one directory listing."""
    recorded, attempts = set(), {}
    for entry in os.listdir(chunks_dir):
        if m := _RECORD.match(entry):
            recorded.add(int(m.group(1)))
        elif m := _CLAIM.match(entry):
            attempts[m.group(1)] = max(attempts.get(m.group(1), 0), int(m.group(3)))
    return Scan(recorded, attempts)


def held(chunks_dir: Path) -> list[str]:
    """The claims that a live worker holds (latest attempt not dead), by name."""
    me, now = this_holder(), time.time()
    return sorted(name for name, latest in scan(chunks_dir).attempts.items()
                  if not is_dead(read(chunks_dir, name, latest), me, now))


# A claim file's fields and their types: a file without an expiry, or with a field of another
# type, is damaged (claims written by hand may leave out the others).
FIELDS = {"expires": (int, float), "worker": (str,), "host": (str,), "machine": (str,),
          "pid": (int,)}


def read(chunks_dir: Path, name: str, attempt: int) -> dict | None:
    """The contents of a claim file, or None when it is gone (released) or damaged: unreadable,
    without a finite expiry, or with a field of `FIELDS` of another type. A damaged claim is
    dead (`is_dead`): the next worker takes the chunk over."""
    try:
        held = json.loads(claim_path(chunks_dir, name, attempt).read_text())
        whole = all(type(v) in FIELDS[k] for k, v in held.items() if k in FIELDS)
        return held if whole and math.isfinite(held["expires"]) else None
    except (OSError, ValueError, AttributeError, KeyError):
        return None


def is_dead(held: dict | None, me: Holder, now: float) -> bool:
    """Whether a claim may be superseded: gone, expired, or its holder's process is gone."""
    if held is None or not now < held["expires"]:
        return True
    if held.get("machine") == me.machine and held.get("pid") != me.pid:
        return not _alive(held.get("pid", 0))
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def _contents(me: Holder, lease_seconds: float, claimed: float) -> str:
    now = time.time()
    return json.dumps({**me._asdict(), "claimed": claimed, "renewed": now,
                       "expires": now + lease_seconds, "lease_seconds": lease_seconds})


def acquire(chunks_dir: Path, name: str, latest: int, me: Holder,
            lease_seconds: float) -> Claim | None:
    """Attempt latest + 1 at `name` if attempt `latest` (0: none) is dead, else None.

    Of several workers calling this with the same `latest`, at most one gets the claim.
    """
    if latest and not is_dead(read(chunks_dir, name, latest), me, time.time()):
        return None
    claim = Claim(name, latest + 1, chunks_dir)
    contents = _contents(me, lease_seconds, time.time())
    return claim if create_new(claim.path, lambda f: f.write(contents)) else None


def superseded(claim: Claim) -> bool:
    """Whether another worker has taken the claim over (attempt + 1 exists)."""
    return claim_path(claim.chunks_dir, claim.name, claim.attempt + 1).exists()


def renew(claim: Claim, me: Holder, lease_seconds: float) -> bool:
    """Extend the lease by `lease_seconds` from now; False (and nothing written) if superseded."""
    if superseded(claim):
        return False
    held = read(claim.chunks_dir, claim.name, claim.attempt) or {}
    contents = _contents(me, lease_seconds, held.get("claimed", time.time()))
    atomic_write(claim.path, lambda f: f.write(contents))
    return True


def release(claim: Claim) -> None:
    """Remove the claim's file and those of the attempts before it."""
    for attempt in range(1, claim.attempt + 1):
        claim_path(claim.chunks_dir, claim.name, attempt).unlink(missing_ok=True)


def remove_stale(chunks_dir: Path) -> None:
    """Remove the claim files of recorded chunks (a holder killed between record and release)
    and a dead standby's."""
    state, me = scan(chunks_dir), this_holder()
    for name, latest in state.attempts.items():
        if name == STANDBY:
            stale = is_dead(read(chunks_dir, name, latest), me, time.time())
        else:
            stale = int(name.split("-")[1]) in state.recorded
        if stale:
            release(Claim(name, latest, chunks_dir))


class Heartbeat:
    """A thread renewing this process's claims every lease / 4 seconds, and releasing them on
    exit. A chunk's claim is renewed for `STALL` times the longest wait between two
    `progress()` calls so far (at least `STALL` leases): a worker whose training hangs loses
    its chunk. `lost(claim)`: whether a renewal found the claim superseded."""

    def __init__(self, me: Holder, lease_seconds: float):
        self.me, self.lease_seconds = me, lease_seconds
        self._held: set[Claim] = set()
        self._lost: set[Claim] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._last, self._longest = time.monotonic(), 0.0
        self._thread = threading.Thread(target=self._run, name="pgjax-sweep-heartbeat",
                                        daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        for claim in list(self._held):
            self.release(claim)

    def progress(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._longest = max(self._longest, now - self._last)
            self._last = now

    def hold(self, claim: Claim) -> None:
        with self._lock:
            self._held.add(claim)
            self._last = time.monotonic()  # waiting for the chunk's work starts now

    def holds(self, name: str) -> bool:
        with self._lock:
            return any(c.name == name for c in self._held)

    def lost(self, claim: Claim) -> bool:
        with self._lock:
            return claim in self._lost

    def release(self, claim: Claim) -> None:
        """Stop renewing the claim and remove its files (under the lock: no renewal after)."""
        with self._lock:
            self._held.discard(claim)
            self._lost.discard(claim)
            release(claim)

    def _run(self) -> None:
        while not self._stop.wait(self.lease_seconds / 4):
            with self._lock:
                patience = STALL * max(self.lease_seconds, self._longest)
                stalled = time.monotonic() - self._last > patience
                for claim in list(self._held):
                    if stalled and claim.name != STANDBY:  # the standby only waits
                        continue
                    try:
                        ok = renew(claim, self.me, self.lease_seconds)
                    except OSError:
                        continue  # a filesystem hiccup: the next beat tries again
                    if not ok:
                        self._held.discard(claim)
                        self._lost.add(claim)
