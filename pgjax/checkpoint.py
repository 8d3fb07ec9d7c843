"""Checkpoints of the full (vmapped) training state with orbax; host-only."""

import dataclasses
import logging
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from pgjax.config import first_line
from pgjax.records import atomic_write, digest, foreign, set_aside
from pgjax.runs import CHECKPOINT_LAYOUT


class CheckpointError(RuntimeError):
    """No readable checkpoint; the step asked for missing or damaged; a checkpoint that does
    not fit the state; a save that failed."""


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def to_saveable(tree):
    """Typed PRNG keys -> their uint32 key data (orbax stores plain arrays)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def from_saveable(tree, like):
    """Inverse of `to_saveable`, using `like` to know which leaves were keys."""
    return jax.tree.map(lambda x, ref: jax.random.wrap_key_data(x, impl=jax.random.key_impl(ref))
                        if _is_key(ref) else x, tree, like)


def drop_orbax_records(record: logging.LogRecord) -> bool:
    """Logging filter: False for records about orbax's work: emitted by orbax code (through
    absl's logger), or by asyncio about orbax's tasks ("Task exception was never retrieved")."""
    return "orbax" not in record.pathname and "orbax" not in record.getMessage()


def quiet_orbax() -> None:
    """Keep orbax's noise off stderr: `Checkpoints` reports every failure itself, in one line.

    Its log records (tracebacks of damaged files or failed writes, also from its background
    threads) are filtered out, and so are the errors that reach `sys.unraisablehook` from its
    threads and coroutines: "Event loop is closed" after a failed save, and the reads of a
    damaged checkpoint left unawaited once the restore has failed.
    """
    for name in ("absl", "orbax", "asyncio"):
        logger = logging.getLogger(name)
        if drop_orbax_records not in logger.filters:
            logger.addFilter(drop_orbax_records)
    if getattr(sys.unraisablehook, "__name__", "") != "drop_orbax_unraisable":
        sys.unraisablehook = _dropping_orbax(sys.unraisablehook)


def _dropping_orbax(hook):
    def drop_orbax_unraisable(unraisable):
        value = unraisable.exc_value
        closed = isinstance(value, RuntimeError) and str(value) == "Event loop is closed"
        code = getattr(unraisable.object, "cr_code", None)  # a coroutine's
        files = [code.co_filename] if code is not None else []
        frame = unraisable.exc_traceback
        while frame is not None:
            files.append(frame.tb_frame.f_code.co_filename)
            frame = frame.tb_next
        if not (closed or any("orbax" in name for name in files)):
            hook(unraisable)

    return drop_orbax_unraisable


def _path_name(path) -> str:
    """A pytree path as "runner/obs": orbax stores named tuples' fields as dict keys."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _arrays(tree) -> list:
    """(path name, leaf) of each leaf of a saveable tree, in order: what its digest covers."""
    return [(_path_name(path), leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)]


DIGEST_FORMAT = "2"  # checkpoints/digests/<update>.sha256: "2 <records.digest of update, arrays>"
KEEP_CHECKPOINTS = 3  # a run's newest checkpoints kept by default


@dataclasses.dataclass
class _HoldingForeign:
    """Orbax preservation policy: keep a checkpoint whose folder holds what orbax did not write
    there (a user's file: `runs.CHECKPOINT_LAYOUT`) or is a symbolic link; retention deletes
    only checkpoints that are wholly orbax's."""

    root: Path

    def should_preserve(self, checkpoints, *, context) -> list[bool]:
        del context
        folders = [self.root / str(c.step) for c in checkpoints]
        return [p.is_symlink() or (p.is_dir() and bool(foreign(p, CHECKPOINT_LAYOUT)))
                for p in folders]


class Checkpoints:
    """Atomic, numbered checkpoints (step = updates done) under RUN_DIR/checkpoints.

    Saving deletes all but the `max_to_keep` newest (None: keeps every one). Each checkpoint's
    digest (`records.digest` of its update and arrays) is written to
    checkpoints/digests/<step>.sha256 before orbax writes the checkpoint, and a restore checks
    it: a checkpoint whose bytes or update changed on disk is damaged, not silently trained on
    (checkpoints without a digest file restore unchecked). With `create=False` (reading a run)
    a missing folder is a CheckpointError, not a new folder.
    """

    def __init__(self, run_dir: Path, max_to_keep: int | None = KEEP_CHECKPOINTS, *,
                 create: bool = True):
        self.root = (Path(run_dir) / "checkpoints").absolute()
        if self.root.is_symlink() or (self.root.exists() and not self.root.is_dir()):
            raise CheckpointError(f"{self.root} is not a directory" + (
                " but a symbolic link, which pgjax does not follow" * self.root.is_symlink()))
        if not create and not self.root.is_dir():
            raise CheckpointError(f"{run_dir} has no checkpoints")
        self.max_to_keep = max_to_keep
        self.pending = None  # (update, future) of the save in progress
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pgjax-checkpoint")
        quiet_orbax()
        self.manager = self._open()

    def _open(self) -> ocp.CheckpointManager:
        keep = ocp.checkpoint_managers.AnyPreservationPolicy(
            [ocp.checkpoint_managers.LatestN(self.max_to_keep), _HoldingForeign(self.root)])
        options = ocp.CheckpointManagerOptions(preservation_policy=keep, create=True)
        return ocp.CheckpointManager(self.root, options=options)

    def save(self, update: int, state) -> None:
        """Start saving `state` as checkpoint `update` on a writer thread, and return.

        Waits for the previous save first (`wait`). The caller must not delete or donate the
        buffers of `state` until `wait` returns. A failed write (e.g. a full disk) is one
        CheckpointError line, raised by the next `wait` (also through `save`, `steps`, `restore`
        or `close`).
        """
        self.wait()
        self.pending = update, self.writer.submit(self._write, update, to_saveable(state))

    def _write(self, update: int, tree) -> None:
        digests = self.root / "digests"
        digests.mkdir(exist_ok=True)
        text = f"{DIGEST_FORMAT} {digest({'update': update}, _arrays(tree))}\n"
        atomic_write(digests / f"{update}.sha256", lambda f: f.write(text))
        self.manager.save(update, args=ocp.args.StandardSave(tree), force=True)
        self.manager.wait_until_finished()
        kept = {f"{s}.sha256" for s in self.manager.all_steps()}
        for path in digests.iterdir():  # those of checkpoints orbax deleted or set aside
            if path.name not in kept and re.fullmatch(r"\d+\.sha256", path.name):
                path.unlink(missing_ok=True)

    def _digest_differs(self, step: int, tree, update: int) -> bool:
        """Whether checkpoint `step`'s saveable `tree`, the state after `update`, differs from
        the digest written with it (False without one); a digest without a format (written
        before the update was in it) covers the arrays alone."""
        try:
            stored = (self.root / "digests" / f"{step}.sha256").read_text().split()
        except FileNotFoundError:
            return False
        value = {"update": update} if stored[:1] == [DIGEST_FORMAT] else None
        return stored[-1:] != [digest(value, _arrays(tree))]

    def wait(self) -> None:
        """Wait until the save in progress (if any) is written; CheckpointError if it failed."""
        pending, self.pending = self.pending, None
        if pending is None:
            return
        update, written = pending
        try:
            written.result()
        except Exception as e:  # orbax wraps OS errors in ValueError / RuntimeError
            reason = "no space left on device" if "No space left on device" in str(e) else \
                first_line(e, 160)
            raise CheckpointError(
                f"saving checkpoint {update} in {self.root} failed: {reason}; the run resumes "
                f"from its last checkpoint with pgjax train --resume {self.root.parent}"
            ) from None

    def steps(self) -> list[int]:
        """The saved updates, once the save in progress is written (`wait`)."""
        self.wait()
        return sorted(self.manager.all_steps())

    def restore(self, like, step: int | None = None, *, set_aside: bool = False,
                at_most: int | None = None, changed: str = "config.json"):
        """(update, state) from `step`, or the newest readable one of at most `at_most` updates.

        Damaged checkpoints (unreadable, not matching their digest, or holding the state of
        another update than their name says: a state's `update` field) are reported in one line
        each and skipped (they are the newer ones: steps are tried newest first). With
        `set_aside` (resume), once one is restored, the damaged ones are renamed to
        `damaged-<step>` beside the others (kept, never overwritten), and those past `at_most`
        to `ahead-<step>`, so the resumed run can save those steps again. When every checkpoint
        is past `at_most`, it returns (0, like): the start. A stored array whose shape differs
        from `like`'s stops the restore, naming the array and asking whether `changed` (what
        made `like`) changed since training.

        Raises:
          CheckpointError: `step` is not a checkpoint of this run or is damaged, none is
            readable, or one does not fit `like`.
        """
        steps = self.steps()
        if step is not None and step not in steps:
            kept = (f" (a run keeps its newest {self.max_to_keep} unless trained with "
                    f"--keep-checkpoints)" if self.max_to_keep and len(steps) >= self.max_to_keep
                    else "")
            raise CheckpointError(f"no checkpoint {step}; available: "
                                  f"{', '.join(map(str, steps)) or 'none'}{kept}")
        ahead = [s for s in steps if step is None and at_most is not None and s > at_most]
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, to_saveable(like))
        damaged, found = [], (0, like)  # every checkpoint past `at_most`: the start
        for s in [step] if step is not None else [s for s in steps if s not in ahead][::-1]:
            restored, reason = self._read(s, abstract, changed)
            if reason is None:
                found = s, from_saveable(restored, like)
                break
            if step is not None:  # the one asked for: no other to fall back on
                others = ", ".join(str(x) for x in steps if x != step) or "none"
                raise CheckpointError(f"checkpoint {s} is damaged ({reason}); the others: {others}")
            print(f"pgjax: checkpoint {s} is damaged ({reason})", file=sys.stderr)
            damaged.append(s)
        else:
            if not ahead or len(ahead) < len(steps):
                # Not the start: a failure that is not damage (memory, a network disk) reads as
                # damage.
                raise CheckpointError(f"no readable checkpoint in {self.root}" + (
                    f"; to train the run again from the start (the same numbers), move "
                    f"{self.root} aside and resume" if set_aside else ""))
        for s in ahead:
            print(f"pgjax: checkpoint {s} is past the {at_most} whole rows of metrics.csv; "
                  "training those updates again", file=sys.stderr)
        if set_aside:
            self._set_aside(dict.fromkeys(damaged, "damaged") | dict.fromkeys(ahead, "ahead"))
        return found

    def _read(self, step: int, abstract, changed: str):
        """(checkpoint `step`'s saveable state, None), or (None, why it is damaged);
        CheckpointError when it does not fit `abstract` (see `restore`)."""
        if (difference := self._shape_difference(step, abstract)) is not None:
            raise CheckpointError(f"checkpoint {step} does not fit the state made from {changed} "
                                  f"({difference}); was {changed} changed after training?")
        try:
            restored = self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
            held = np.asarray(getattr(restored, "update", step))  # a state's update counter
            if self._digest_differs(step, restored, int(held.flat[0])):
                return None, "its arrays do not match the sha256 written with them"
            if (held != step).any():  # a checkpoint renamed: its state is of another update
                return None, f"it holds the state after update {held.flat[0]}, not {step}"
        except Exception as e:  # orbax raises many types for damaged files
            return None, first_line(e, 120)
        return restored, None

    def _shape_difference(self, step: int, abstract) -> str | None:
        """The first array `abstract` has that is not stored or stored with another shape, or
        the first stored one it lacks, as text; None when all agree or the stored metadata does
        not read (the restore then reports the damage)."""
        try:
            with ocp.StandardCheckpointer() as reader:
                stored = reader.metadata(self.root / str(step) / "default").item_metadata
            stored = {name: tuple(leaf.shape) for name, leaf in _arrays(stored)}
        except Exception:  # a damaged checkpoint: left to the restore
            return None
        if not stored:  # metadata that reads as nothing: a damaged checkpoint, as above
            return None
        made = {name: tuple(leaf.shape) for name, leaf in _arrays(abstract)}
        for name, shape in made.items():
            if name not in stored:
                return f"it stores no {name}"
            if stored[name] != shape:
                return f"{name} is stored as {stored[name]}, made as {shape}"
        if extra := [name for name in stored if name not in made]:
            return f"it stores {extra[0]}, which the state lacks"
        return None

    def _set_aside(self, steps: dict[int, str]) -> None:
        """Move checkpoint s to `<steps[s]>-<s>` (`records.set_aside`: -2, -3... if taken)."""
        if not steps:
            return
        self.manager.close()
        for s, why in steps.items():
            target = self.root / set_aside(self.root / str(s), f"{why}-{s}")
            print(f"pgjax: checkpoint {s} moved to {target}", file=sys.stderr)
        self.manager = self._open()

    def close(self) -> None:
        """Wait for the save in progress (`wait`), then close orbax's manager."""
        self.wait()
        self.writer.shutdown()
        self.manager.close()
