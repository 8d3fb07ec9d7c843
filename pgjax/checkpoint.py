"""Checkpoints of the full (vmapped) training state with orbax; host-only."""

import sys
from pathlib import Path

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """No readable checkpoint."""


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def to_saveable(tree):
    """Typed PRNG keys -> their uint32 key data (orbax stores plain arrays)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def from_saveable(tree, like):
    """Inverse of `to_saveable`, using `like` to know which leaves were keys."""
    return jax.tree.map(
        lambda x, ref: jax.random.wrap_key_data(x, impl=jax.random.key_impl(ref))
        if _is_key(ref) else x,
        tree, like,
    )


class Checkpoints:
    """Atomic, numbered checkpoints (step = updates done) under RUN_DIR/checkpoints."""

    def __init__(self, run_dir: Path, max_to_keep: int = 3):
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self.manager = ocp.CheckpointManager((run_dir / "checkpoints").absolute(), options=options)

    def save(self, update: int, state) -> None:
        self.manager.save(update, args=ocp.args.StandardSave(to_saveable(state)), force=True)
        self.manager.wait_until_finished()

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def restore(self, like, step: int | None = None):
        """(update, state) from `step`, or the newest readable one; damaged ones are skipped."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, to_saveable(like))
        steps = [step] if step is not None else self.steps()[::-1]
        for s in steps:
            try:
                restored = self.manager.restore(s, args=ocp.args.StandardRestore(abstract))
            except Exception as e:  # orbax raises many types for damaged files
                reason = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
                print(f"pgjax: checkpoint {s} is damaged ({reason}); trying an older one",
                      file=sys.stderr)
                continue
            return s, from_saveable(restored, like)
        raise CheckpointError(f"no readable checkpoint in {self.manager.directory}")

    def close(self) -> None:
        self.manager.close()
