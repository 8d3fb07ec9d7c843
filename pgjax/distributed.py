"""Multi-process start-up: `jax.distributed.initialize`, and the one gymnax workaround it needs.

`jax.distributed.initialize` must run before the JAX backend starts, but importing gymnax starts
it: `gymnax.environments.misc.frozen_lake` builds one array at import, its move table
`_DIRECTIONS`. pgjax imports gymnax only on first use, so a sweep started from the CLI never
meets this; a caller who imported gymnax (or built a `pgjax.Env`) first does. `init_distributed`
then drops the single-process backend (`jax.extend.backend.clear_backends`), initializes, and
rebuilds that table on the distributed backend: left alone it would stay on the dropped one,
keeping that backend (on a GPU, its device memory) alive beside the new one. Any other JAX array
made before the call is in the same state: build components after it.

This is the only place pgjax reaches into gymnax's internals; `tests/test_sweep.py` checks it.
"""

import sys

import jax
import jax.extend.backend
import numpy as np

FROZEN_LAKE = "gymnax.environments.misc.frozen_lake"


def init_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """jax.distributed.initialize with the given values, or auto-detected (SLURM, MPI, ...).

    Does nothing when it is already initialized. If the backend has already started, it is
    cleared first (see the module docstring) and gymnax's FrozenLake move table is rebuilt.
    """
    if jax.distributed.is_initialized():
        return
    try:
        _initialize(coordinator_address, num_processes, process_id)
        return
    except RuntimeError as e:  # JAX's public check, raised before it does anything
        if "before any JAX" not in str(e):
            raise
    frozen_lake = sys.modules.get(FROZEN_LAKE)
    directions = None if frozen_lake is None else np.asarray(frozen_lake._DIRECTIONS)
    jax.extend.backend.clear_backends()
    _initialize(coordinator_address, num_processes, process_id)
    if frozen_lake is not None:
        frozen_lake._DIRECTIONS = jax.numpy.asarray(directions)


def _initialize(coordinator_address, num_processes, process_id) -> None:
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes,
        process_id=process_id,
    )
