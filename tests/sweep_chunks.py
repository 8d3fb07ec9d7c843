"""Reading a sweep's chunk files in tests (tests/test_sweep.py, tests/test_cluster.py)."""

from pathlib import Path

import numpy as np


def chunk_metrics(out: Path) -> dict[int, dict]:
    """run id -> {metric: [updates]} from every chunk's npz."""
    per_run = {}
    for path in sorted((Path(out) / "chunks").glob("chunk-*.npz")):
        with np.load(path) as data:
            for i, run in enumerate(data["run"]):
                per_run[int(run)] = {k: data[k][i] for k in data.files if k != "run"}
    return per_run
