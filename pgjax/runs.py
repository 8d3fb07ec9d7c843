"""Host-only run records: provenance, run directories, the metrics CSV."""

import csv
import json
import os
import platform
import subprocess
import sys
from datetime import datetime
from importlib import metadata
from pathlib import Path

import numpy as np

from pgjax.config import Config, plain, to_dict
from pgjax.records import LOCK, DirLock, atomic_write, create_new, digest, foreign, remove
from pgjax.stats import first_reaching, nanmean

PACKAGES = ("pgjax", "jax", "jaxlib", "flax", "optax", "gymnax", "chex", "numpy")
# Instruction-set extensions that XLA's CPU code generation uses when the host has them (vector
# width, fused multiply-add): a run's float bits on CPU depend on which of these it had.
ISA = (
    "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512bw",
    "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "asimd", "sve", "sve2",
)
MARKER = "pgjax_run"
# What orbax writes in a checkpoint's folder (checkpoints/<update>); the arrays under default/
# are orbax's to name.
CHECKPOINT_LAYOUT = {"_CHECKPOINT_METADATA": None, "commit_success.txt": None,
                     "default": dict.fromkeys(("_METADATA", "_CHECKPOINT_METADATA", "_sharding",
                                               "manifest.ocdbt", "commit_success.txt",
                                               "array_metadatas", "d", r"ocdbt\.process_\d+"))}
# What pgjax writes in a run directory (`records.foreign`), besides dot-named temp files and
# its lock: all that --overwrite deletes (metrics.jsonl: earlier versions wrote it). Anything
# else is the user's, and --overwrite refuses.
RUN_LAYOUT = {
    **dict.fromkeys(("config.json", "metrics.csv", "metrics.jsonl", "summary.json", "eval.json",
                     "curve.png", "curves.png", "curves.svg")),
    "checkpoints": {r"\d+|(damaged|ahead)-\d+(-[\d-]+)?": CHECKPOINT_LAYOUT,
                    r"\d+\.orbax-checkpoint-tmp.*": None, "digests": {r"\d+\.sha256": None}},
    "tensorboard": {r"events\.out\.tfevents\..*": None},
    "wandb": {r"(offline-)?run-.*|latest-run|debug.*\.log": None},
}


def provenance() -> dict:
    """Versions, git commit and devices, for `config.json`."""
    import jax

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "versions": versions,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "devices": [str(d) for d in jax.devices()],
        "backend": jax.default_backend(),
        "jax_threefry_partitionable": bool(jax.config.jax_threefry_partitionable),
        "cpu": cpu(),
    }


def cpu() -> dict:
    """The host CPU: {"name", "isa": the extensions of `ISA` it has}, read from /proc/cpuinfo
    (name from `platform.processor()` and no extensions where there is none)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "model name":
            name = value
        elif key in ("flags", "Features"):
            flags = set(value.split())
            break
    return {"name": name, "isa": [f for f in ISA if f in flags]}


def git_commit() -> str | None:
    """HEAD of the pgjax checkout (with '-dirty' if it has changes), or None outside git."""
    src = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=src, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty else "")


def is_run_dir(path: Path) -> bool:
    try:
        return MARKER in json.loads((path / "config.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def damaged_run(path: Path) -> str | None:
    """Why `path`, which holds a config.json and only files a run writes, is not a run (its
    config.json is cut short or not JSON); None for a run or other folders (valid JSON without
    pgjax's marker is another tool's)."""
    record_path = path / "config.json"
    if is_run_dir(path) or not record_path.is_file() or foreign(path, RUN_LAYOUT):
        return None
    try:
        json.loads(record_path.read_text())
    except (OSError, ValueError) as e:
        return f"its config.json does not read: {e}"
    return None  # JSON of another tool's: not pgjax's to replace


def check_run_dir(out: Path | None, env: str, *, overwrite: bool = False) -> Path:
    """The run directory a new run will use, checked without touching the disk.

    Refuses a path that is not a directory, one that holds other files or, unless `overwrite`,
    a run (whole or with a damaged config.json), and one whose nearest existing folder is not
    writable. Default runs/<env>-<timestamp>.
    """
    if out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / f"{env}-{stamp}"
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"--out {out} exists and is not a directory")
        damaged = damaged_run(out)
        if damaged and not overwrite:
            raise ValueError(f"--out {out} holds a damaged pgjax run ({damaged}); pass "
                             f"--overwrite (overwrite=True in Python) to replace it")
        if is_run_dir(out):
            if not overwrite:
                raise ValueError(f"--out {out} already holds a pgjax run; pass --overwrite "
                                 "(overwrite=True in Python)")
            if theirs := foreign(out, RUN_LAYOUT):
                raise ValueError(f"--out {out} holds a pgjax run and files it did not write "
                                 f"({', '.join(theirs[:3])}{', …' if len(theirs) > 3 else ''})"
                                 f", which --overwrite would delete; move them first")
        elif not damaged and any(p.name != LOCK for p in out.iterdir()):
            raise ValueError(f"--out {out} exists and is not a pgjax run directory")
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: cannot write in {existing} (permission denied)")
    return out


def create_run_dir(out: Path, env: str, *, overwrite: bool = False) -> DirLock:
    """Make the directory `check_run_dir` accepted and lock it for this process (`DirLock`,
    held until closed); then, under the lock, check it again and delete the run it replaces:
    the entries pgjax names (`RUN_LAYOUT`), never following a symbolic link.

    Raises:
      records.Locked: another process writes it.
      ValueError: as `check_run_dir` (another process wrote a run there meanwhile).
    """
    out.mkdir(parents=True, exist_ok=True)
    lock = DirLock(out).exclusive()
    try:
        check_run_dir(out, env, overwrite=overwrite)
        if is_run_dir(out) or damaged_run(out):
            for name in RUN_LAYOUT:
                remove(out / name)
    except BaseException:
        lock.close()
        raise
    return lock


def write_json(path: Path, data: dict, *, new: bool = False) -> bool:
    """Atomic write (`atomic_write`) of strict JSON: NaN and ±inf as null (`config.plain`).
    With `new`, the file is created exclusively (`create_new`): False when `path` exists."""
    text = json.dumps(plain(data, nulls=True), indent=2, default=str, allow_nan=False) + "\n"
    if new:
        return create_new(path, lambda f: f.write(text))
    atomic_write(path, lambda f: f.write(text))
    return True


FORMAT = 2  # config.json's format; records without a "format" field are of format 1


def config_record(config: Config, *, seed: int, seeds: int, **extra) -> dict:
    """config.json's contents: the marker and format, every config field, seed and seeds, the
    `records.digest` of each, `extra`, provenance."""
    fields = to_dict(config)
    return {MARKER: 1, "format": FORMAT, "config": fields, "config_sha256": digest(fields),
            "seeds_sha256": digest({"seed": seed, "seeds": seeds}), "seed": seed,
            "seeds": seeds, **extra, **provenance()}


METRIC_COLUMNS = ("loss", "policy_loss", "value_loss", "entropy", "grad_norm", "episodes")
RATIO_COLUMNS = ("approx_kl", "clip_fraction")  # runs with several passes over each batch


class MetricsCSV:
    """metrics.csv, one row per update: env steps, wall seconds, mean and per-seed return,
    seed-mean losses; with `ratio` (a run of several passes over each batch) also approx_kl and
    clip_fraction. With `keep_updates` (resume), it is cut back to its first whole rows, so
    that it keeps no damaged line, and the metrics.jsonl of earlier versions, which would no
    longer match it, is deleted.
    """

    def __init__(self, path: Path, num_seeds: int, keep_updates: int | None = None, *,
                 ratio: bool = False):
        self.path = path
        self.columns = METRIC_COLUMNS + (RATIO_COLUMNS if ratio else ())
        self.header = ["update", "env_steps", "wall_seconds", "return_mean",
                       *(f"return_seed{i}" for i in range(num_seeds)), *self.columns]
        rows = []
        if keep_updates is not None and path.exists():
            rows = _whole_rows(path)[1][:keep_updates]  # resume keeps only whole rows
            remove(path.with_suffix(".jsonl"))
        self.wall_offset = float(rows[-1][2]) if rows else 0.0
        atomic_write(path, lambda f: csv.writer(f).writerows([self.header, *rows]))

    def append(self, first_update: int, steps_per_update: int, metrics, wall: float) -> list:
        """Write the rows of one chunk and return them as dicts (NaN as None), for loggers.

        `metrics` fields are [seeds, updates] numpy arrays.
        """
        ret = np.asarray(metrics.episode_return, np.float64)
        rows = []
        for j in range(ret.shape[1]):
            update = first_update + j + 1
            per_seed = ret[:, j]
            row = [update, update * steps_per_update, round(self.wall_offset + wall, 3),
                   nanmean(per_seed), *per_seed]
            row += [float(np.mean(np.asarray(getattr(metrics, c))[:, j])) for c in self.columns]
            rows.append(row)
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerows(rows)
        return [plain(dict(zip(self.header, row, strict=True)), nulls=True) for row in rows]

    def returns(self) -> np.ndarray:
        """Per-seed episode returns of every row written, [seeds, updates] float64."""
        return seed_returns(read_metrics(self.path.parent))


INTEGER_COLUMNS = ("update", "env_steps")


def _whole_rows(path: Path) -> tuple[list[str], list[list[str]], bool]:
    """(header, the rows from the top that read whole as text, whether a damaged row follows).

    A row reads whole when it ends in a line break, has the header's columns, every one a
    number (update and env steps whole numbers), and its update is its row number. A file
    cut short or damaged after training keeps the rows above the damage; bytes that do not
    decode damage only their own row.
    """
    lines = path.read_text(errors="replace").splitlines(keepends=True)
    header = next(csv.reader(lines[:1]), [])
    rows = []
    for line in lines[1:]:
        try:
            row = next(csv.reader([line]))
            values = [float(x) for x in row]  # ValueError: a column that is not a number
            whole = (line.endswith("\n") and len(row) == len(header)
                     and values[:1] == [len(rows) + 1]
                     and all(v.isdigit() for name, v in zip(header, row, strict=True)
                             if name in INTEGER_COLUMNS))
        except (csv.Error, ValueError, StopIteration):
            whole = False
        if not whole:
            return header, rows, True
        rows.append(row)
    return header, rows, False


def whole_rows(path: Path) -> int:
    """How many rows from the top of a metrics.csv read whole (`_whole_rows`); 0 without one."""
    try:
        return len(_whole_rows(path)[1])
    except OSError:
        return 0


def read_metrics(run_dir: Path) -> dict[str, np.ndarray]:
    """Columns of RUN_DIR/metrics.csv as float arrays.

    Raises:
      ValueError: the file has no rows, or a row that does not read (`_whole_rows`).
      OSError: it cannot be read.
    """
    path = run_dir / "metrics.csv"
    header, rows, damaged = _whole_rows(path)
    if damaged:
        raise ValueError(f"{path} is damaged at row {len(rows) + 1}")
    if not rows or header[:1] != ["update"]:
        raise ValueError(f"{path} has no rows")
    return dict(zip(header, np.array(rows, np.float64).T, strict=True))


def seed_returns(cols: dict[str, np.ndarray]) -> np.ndarray:
    """[seeds, updates] per-seed episode returns from `read_metrics` columns.

    Raises:
      ValueError: the columns are not return_seed0, return_seed1, … (renamed, or none).
    """
    seeds = [name for name in cols if name.startswith("return_seed")]
    if not seeds or seeds != [f"return_seed{i}" for i in range(len(seeds))]:
        raise ValueError("its per-seed columns are not return_seed0, return_seed1, …")
    return np.stack([cols[name] for name in seeds])


def steps_to(run_dir: Path, threshold: float | None) -> int | None:
    """Env steps per seed at the first update whose IQM over seeds reaches `threshold` (None:
    never, or no threshold)."""
    if threshold is None:
        return None
    cols = read_metrics(run_dir)
    return first_reaching(cols["env_steps"], seed_returns(cols), threshold)
