"""A sweep's files: its identity (sweep.json and the directory's lock, `prepare_out_dir`), the
chunks' records (chunks/chunk-NNNNNN.json, created exclusively after its metrics, .npz), CSV
tables. Written through `pgjax.records`; records carry `FORMAT`, and `migrate_sweep` and
`migrate_chunk` read those of earlier versions."""

import csv
import dataclasses
import io
import json
import math
import os
import sys
import zipfile
from pathlib import Path

import numpy as np

from pgjax import records, runs
from pgjax.components import describe_given, given_differences
from pgjax.config import FIELDS, Config
from pgjax.records import LOCK, DirLock, atomic_write, digest
from pgjax.sweep import claims
from pgjax.sweep.claims import chunk_name
from pgjax.sweep.spec import Chunk, Plan, Spec, SpecError

MARKER = "pgjax_sweep"
FORMAT = 2  # of sweep.json and chunk records; a record without "format" is of format 1
# What a sweep writes in its directory (`pgjax sweep --launcher` adds its workers' logs).
SWEEP_FILES = {"sweep.json", "chunks", "results.csv", "summary.csv", "summary.json",
               "summary.png", "logs", LOCK}
NAN_COLUMNS = ("final_return", "auc")  # the row fields that are NaN where no episode finished
TUPLE_FIELDS = tuple(f.name for f in dataclasses.fields(Config) if isinstance(f.default, tuple))


class IncompleteSweep(SpecError):
    """A merge asked of a sweep whose chunks are not all recorded: reported as one line."""


def write_csv(path: Path, rows: list[dict]) -> None:
    """One CSV row per dict (the first row's keys are the header), written atomically; a tuple
    (`hidden`) is written as its JSON list, "[32, 32]"."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: json.dumps(list(v)) if isinstance(v, tuple) else v for k, v in row.items()}
                     for row in rows)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def chunk_path(out_dir: Path, index: int, suffix: str) -> Path:
    return out_dir / "chunks" / f"{chunk_name(index)}{suffix}"


def sweep_id(spec: dict, components: dict) -> str:
    """sha256 of a sweep's normalized spec (`Spec.to_json`) and components (`describe_given`):
    sweep.json and every chunk record carry it, so a chunk tells which sweep it is of."""
    return digest({"spec": spec, "components": components}, separators=(", ", ": "))


def read_json(path: Path) -> dict | None:
    """A JSON object's file as a dict ({} for other JSON), or None where it is missing or does
    not read."""
    try:
        held = json.loads(path.read_text())
    except (FileNotFoundError, IsADirectoryError, ValueError):
        return None
    return held if isinstance(held, dict) else {}


# ----------------------------------------------------------------------------- migration


def migrate_sweep(held: dict) -> dict:
    """sweep.json as `FORMAT` has it: sweeps written before components were recorded gave none
    (a sweep.json without `sweep_sha256` is checked by its spec alone)."""
    return {"components": describe_given({}), **held}


def migrate_chunk(record: dict, arrays: dict) -> None:
    """A chunk's record and metrics, in place, as `FORMAT` has them. Early records named the
    worker "process", wrote tuple fields as JSON text and kept `diverged` in the rows only; a
    record without `sweep_sha256` is of any sweep."""
    if record.get("format", 1) >= FORMAT:
        return
    if "process" in record:
        record["worker"] = record.pop("process")
    record["rows"] = [{"worker" if k == "process" else k: v for k, v in row.items()}
                      for row in record["rows"]]
    for row in record["rows"]:
        for name in TUPLE_FIELDS:
            if isinstance(row.get(name), str):
                row[name] = json.loads(row[name])
    if "diverged" not in arrays:
        arrays["diverged"] = np.array([row.get("diverged", False) for row in record["rows"]])


# ----------------------------------------------------------------------------- chunks


def run_row(plan: Plan, run: int, chunk: Chunk, m: dict, wall: float, worker: str) -> dict:
    """One results-table row: ids, every config field, and the run's statistics.

    final_return: the mean return of the episodes that finished in the last update (NaN if none
    ever did); auc: the mean of that return over updates, skipping the NaN updates before the
    first episode ends; diverged: `pgjax.train.diverged`, computed in the chunk's program.
    """
    config_id, seed_index = plan.runs[run]
    config = plan.configs[config_id]
    ret = np.asarray(m["episode_return"], np.float64)
    finite = np.isfinite(ret)
    return {
        "run": run,
        "config": config_id,
        "seed_index": seed_index,
        "chunk": chunk.index,
        "worker": worker,
        **{name: getattr(config, name) for name in FIELDS},
        "env_steps": config.num_updates * config.steps_per_update,
        "final_return": float(ret[-1]),
        "auc": float(ret[finite].mean()) if finite.any() else float("nan"),
        "diverged": bool(m["diverged"]),
        "wall_seconds": wall,
    }


def load_record(out_dir: Path, chunk: Chunk, plan: Plan, sweep: str) -> tuple[dict | None, bool]:
    """(record, damaged): the one test of "recorded", for the worker loop, merge and status.

    (record, False) when the chunk's .json and .npz read whole (each array against its CRC),
    hold its runs, are of the sweep `sweep` (a `sweep_id`) and every row is what `run_row` makes
    of the plan and those metrics (over the fields the row has); (None, False) without a .json;
    otherwise (None, True): damaged, to be set aside.
    """
    try:
        text = chunk_path(out_dir, chunk.index, ".json").read_text()
    except FileNotFoundError:
        return None, False
    try:
        record = json.loads(text)
        with np.load(chunk_path(out_dir, chunk.index, ".npz")) as data:
            arrays = {name: data[name] for name in data.files}
        migrate_chunk(record, arrays)
        whole = _whole(record, arrays, chunk, plan, sweep)
    except (FileNotFoundError, ValueError, KeyError, TypeError, IndexError, AttributeError,
            EOFError, zipfile.BadZipFile):  # cut short or garbled, or without its metrics
        whole = False
    return (record, False) if whole else (None, True)


def _whole(record: dict, arrays: dict, chunk: Chunk, plan: Plan, sweep: str) -> bool:
    """Whether a chunk's record (its rows decoded here) and metrics are those `load_record`
    accepts."""
    runs, rows = list(chunk.runs), record["rows"]
    for row in rows:  # NaN is written as null, a tuple as a list
        for name in NAN_COLUMNS:
            row[name] = float("nan") if row[name] is None else row[name]
        for name in TUPLE_FIELDS:
            if isinstance(row.get(name), list):
                row[name] = tuple(row[name])
    if not (record["runs"] == runs and len(rows) == len(runs) and arrays["run"].tolist() == runs
            and all(a.shape[:1] == (len(runs),) for a in arrays.values())
            and record.get("sweep_sha256", sweep) == sweep):
        return False
    return all(_same_row(row, run_row(plan, run, chunk, {k: a[i] for k, a in arrays.items()},
                                      row.get("wall_seconds"), row.get("worker")))
               for i, (run, row) in enumerate(zip(runs, rows, strict=True)))


def _same_row(row: dict, expected: dict) -> bool:
    """Whether a recorded row holds what `run_row` makes (statistics to 1e-9, NaN equal to
    NaN), over the fields it has."""
    for name, want in expected.items():
        if name not in row:
            continue
        got = row[name]
        number = isinstance(got, int | float) and not isinstance(got, bool)
        if isinstance(want, float) and number:
            if not (math.isclose(got, want, rel_tol=1e-9)
                    or (math.isnan(got) and math.isnan(want))):
                return False
        elif got != want or (type(got) is bool) != (type(want) is bool):
            return False
    return True


def load_records(out_dir: Path, plan: Plan, sweep: str) -> tuple[dict, list[int], list[int]]:
    """({chunk index: record} of the recorded chunks, the indices of the others, those of the
    damaged ones among them): `load_record` of every chunk of the plan."""
    records, missing, damaged = {}, [], []
    for chunk in plan.chunks:
        record, bad = load_record(out_dir, chunk, plan, sweep)
        if record is not None:
            records[chunk.index] = record
        else:
            missing.append(chunk.index)
            if bad:
                damaged.append(chunk.index)
    return records, missing, damaged


def save_chunk(out_dir: Path, result: dict) -> bool:
    """Metrics first, then the record, linked into place: False, and nothing recorded, when
    another worker's record is already there (a chunk is recorded once)."""
    index = result["record"]["chunk"]
    record = chunk_path(out_dir, index, ".json")
    if record.exists():
        return False
    atomic_write(chunk_path(out_dir, index, ".npz"), lambda f: np.savez(f, **result["arrays"]),
                 mode="wb")
    return runs.write_json(record, result["record"], new=True)


def set_aside(out_dir: Path, index: int) -> str:
    """Move a damaged chunk's files to `damaged-chunk-NNNNNN.*` (`records.set_aside`: -2,
    -3... where those exist) and return the new names as `chunks/damaged-chunk-NNNNNN.*`.

    Only the holder of the chunk's claim calls it. The metrics move first: until the record
    moves, the chunk stays damaged, not unstarted.
    """
    try:
        stem = records.set_aside(chunk_path(out_dir, index, ""), f"damaged-{chunk_name(index)}",
                                 (".npz", ".json"))
    except FileExistsError as e:  # a superseded holder, still alive, took the name first
        raise IncompleteSweep(f"{e.filename2 or e.filename} appeared while setting chunk "
                              f"{index} aside; run the sweep again") from None
    return f"chunks/{stem}.*"


def span(indices: list[int], most: int = 12) -> str:
    """'0, 3-5, 9' for [0, 3, 4, 5, 9]; after `most` pieces, '… (N in all)'."""
    pieces, start = [], None
    for i, x in enumerate(indices):
        start = x if start is None else start
        if i + 1 == len(indices) or indices[i + 1] != x + 1:
            pieces.append(str(x) if x == start else f"{start}-{x}")
            start = None
    text = ", ".join(pieces[:most])
    return text + (f", … ({len(indices)} in all)" if len(pieces) > most else "")


# ----------------------------------------------------------------------------- identity


def held_sweep(out_dir: Path, spec: Spec) -> dict:
    """sweep.json of the sweep in out_dir (`migrate_sweep`), which must be this spec's (any
    components); SpecError where out_dir holds no sweep, or another one."""
    if not (out_dir / "sweep.json").is_file():
        raise SpecError(f"--out {out_dir} holds no sweep (no sweep.json); start it with "
                        f"pgjax sweep SPEC --out {out_dir}")
    held = _read_sweep(out_dir)
    if held is None:
        raise SpecError(f"--out {out_dir}: its sweep.json does not read; pgjax sweep SPEC --out "
                        f"{out_dir} writes it again (keeping the chunks recorded for SPEC)")
    _check_same_sweep(out_dir, held, spec, None)
    return held


def _read_sweep(out_dir: Path) -> dict | None:
    """out_dir's sweep.json in the current format (None where it does not read); SpecError for
    a format this version does not know."""
    held = read_json(out_dir / "sweep.json")
    if held is not None and (version := held.get("format", 1)) not in range(1, FORMAT + 1):
        raise SpecError(f"--out {out_dir}: its sweep.json has format {version!r}; this pgjax reads "
                        f"formats 1 to {FORMAT}: a newer format needs a newer pgjax")
    return None if held is None else migrate_sweep(held)


def prepare_out_dir(out_dir: Path, spec: Spec, components: dict | None = None, *,
                    replace_unstarted: bool = False) -> DirLock:
    """Create out_dir, or accept one that holds this same sweep (spec and `describe_given`
    components, default none); SpecError otherwise. Returns the directory's lock held shared,
    for the caller to close once done.

    sweep.json is created (exclusively) or replaced only under the lock held alone, which no
    live worker of any sweep shares; while workers share it, a process only checks that it is
    its spec's. With `replace_unstarted` a different sweep that trained nothing is replaced; a
    sweep.json that does not read, or is missing, is written again when the chunks recorded
    are of this sweep (`_adopt_chunks`).
    """
    components = describe_given({}) if components is None else components
    if out_dir.exists() and not out_dir.is_dir():
        raise SpecError(f"--out {out_dir} exists and is not a directory")
    if not (out_dir / "sweep.json").exists():  # no lock file left in a folder of other files
        _check_sweep_files(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = DirLock(out_dir)
    try:
        if lock.try_exclusive():
            _make_identity(out_dir, spec, components, replace_unstarted)
        else:  # other workers share the lock: sweep.json is theirs, and must be this sweep's
            lock.shared()
            if (held := _read_sweep(out_dir)) is None:
                raise SpecError(f"--out {out_dir}: its sweep.json does not read and other "
                                f"workers use the directory; run the sweep again once they end")
            _check_same_sweep(out_dir, held, spec, components)
        (out_dir / "chunks").mkdir(exist_ok=True)
        lock.shared()
    except BaseException:
        lock.close()
        raise
    return lock


def _make_identity(out_dir: Path, spec: Spec, components: dict, replace_unstarted: bool) -> None:
    """`prepare_out_dir` under the lock held alone: keep this sweep's sweep.json, or create it
    where there is none or the sweep it replaces allows."""
    held = _read_sweep(out_dir)
    if held is not None:
        try:
            _check_same_sweep(out_dir, held, spec, components)
            return
        except SpecError:
            if not (replace_unstarted and held.get(MARKER) == 1 and _trained_nothing(out_dir)):
                raise
            print(f"pgjax: --out {out_dir} held another sweep, which recorded no chunk; "
                  f"this one replaces it", file=sys.stderr)
    _check_sweep_files(out_dir)
    ours = sweep_id(spec.to_json(), components)
    path = out_dir / "sweep.json"
    if held is None:
        _adopt_chunks(out_dir, ours, "does not read" if path.exists() else "is missing")
    record = {MARKER: 1, "format": FORMAT, "spec": spec.to_json(), "components": components,
              "sweep_sha256": ours, **runs.provenance()}
    if not runs.write_json(path, record, new=not path.exists()):
        raise SpecError(f"--out {out_dir}: another process wrote its sweep.json meanwhile "
                        f"(its filesystem does not lock files); run the sweep again")


def _adopt_chunks(out_dir: Path, ours: str, why: str) -> None:
    """Where sweep.json is gone: the chunks recorded (if any) must say which sweep they are of
    (`sweep_sha256`), and one must be of this one; chunks of another are set aside when read."""
    ids = [record.get("sweep_sha256") for path in sorted((out_dir / "chunks").glob("chunk-*.json"))
           if (record := read_json(path)) is not None]  # one that does not read: set aside later
    if not ids:
        return
    if None in ids:
        raise SpecError(f"--out {out_dir}: its sweep.json {why}, and chunks recorded by "
                        f"an earlier pgjax do not say which sweep they are of; restore "
                        f"sweep.json, or use another --out")
    if ours not in ids:
        raise SpecError(f"--out {out_dir}: its sweep.json {why}, and its chunks are of "
                        f"another sweep (another spec or components); use another --out")
    print(f"pgjax: --out {out_dir}: its sweep.json {why}, so it is written again for "
          f"this spec; a recorded chunk of another sweep is set aside as damaged", file=sys.stderr)


def _check_sweep_files(out_dir: Path) -> None:
    """SpecError when out_dir holds names a sweep does not write."""
    if out_dir.exists() and any(p.name not in SWEEP_FILES and not p.name.startswith(".sweep.json.")
                                for p in out_dir.iterdir()):
        raise SpecError(f"--out {out_dir} exists and is not a pgjax sweep directory")


def _trained_nothing(out_dir: Path) -> bool:
    """Whether a sweep directory holds no chunk's files (recorded, set aside or cut short), no
    live worker's claim and no logs/ (jobs launched, maybe still queued): a sweep that stopped
    before its first chunk. If so, the dead workers' claims are removed."""
    chunks_dir = out_dir / "chunks"
    if (out_dir / "logs").exists():
        return False
    if not chunks_dir.is_dir():
        return True
    if claims.held(chunks_dir) or not all(
            name.startswith(".") or ".claim-" in name for name in os.listdir(chunks_dir)):
        return False
    for name, latest in claims.scan(chunks_dir).attempts.items():
        claims.release(claims.Claim(name, latest, chunks_dir))
    return True


def _check_same_sweep(out_dir: Path, held: dict, spec: Spec, components: dict | None) -> None:
    """Refuse a sweep.json of another spec, or (unless components is None) other components."""
    if held.get(MARKER) != 1:
        raise SpecError(f"--out {out_dir} holds a sweep.json that is not a pgjax sweep")
    stored = held.get("sweep_sha256")
    if stored is not None and stored != sweep_id(held.get("spec"), held["components"]):
        raise SpecError(f"--out {out_dir}: its sweep.json was edited (its sweep_sha256 is not "
                        f"that of its spec and components); restore it, or use another --out")
    ours = spec.to_json()
    if held.get("spec") != ours:
        diff = [k for k in ours if held.get("spec", {}).get(k) != ours[k]]
        raise SpecError(f"--out {out_dir} holds a different sweep (spec differs in "
                        f"{', '.join(diff) or 'its fields'}); use another --out to start a new one")
    # The order of grid and random fields numbers the runs and draws the samples.
    if reordered := [k for k in ("grid", "random") if list(held["spec"][k]) != list(ours[k])]:
        raise SpecError(
            f"--out {out_dir} holds this sweep with its {' and '.join(reordered)} fields in "
            f"another order ({', '.join(held['spec'][reordered[0]])}), which numbers its runs "
            f"otherwise; list them in that order, or use another --out")
    then = held["components"]
    if components is None or not (differences := given_differences(then, components)):
        return
    if sorted(then.get("given", [])) == components["given"]:
        which = "; ".join(f"{name} {a}, not {b}" for name, a, b in differences)
    else:
        which = f"{_named(then)}, not {_named(components)}"
    raise SpecError(f"--out {out_dir} holds this spec run with other components ({which}); use "
                    f"another --out to start a new one")


def _named(components: dict) -> str:
    names = components.get("given", [])
    return ", ".join(f"{n}={components.get(n)}" for n in names) or "none given"
