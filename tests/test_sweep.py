"""`pgjax sweep`: plans, batch-mate independence, divergence, resume, sharding, errors, user
components. Sweeps over several worker processes: tests/test_cluster.py.

The CartPole sweeps here share one tiny program shape (batch of 4 runs, 3 updates); the sweep
of a user's env compiles its own. The 4-device sweep runs as a subprocess started at the top of
the module, in parallel with the in-process tests.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest
from sweep_chunks import chunk_metrics
from user_components import BiasedPolicy, EnvParams, LogitsOnly, ShortCorridor

import pgjax
from pgjax.cli import main
from pgjax.sweep import (
    IncompleteSweep,
    SpecError,
    claims,
    make_plan,
    merge_sweep,
    parse_spec,
    sweep_status,
    work,
)
from pgjax.sweep import run as sweep_run
from pgjax.sweep.files import prepare_out_dir
from pgjax.sweep.run import components_key
from pgjax.train import seed_keys, train

TINY = {"num_envs": 4, "num_steps": 20, "total_timesteps": 240, "hidden": [8], "seeds": 2,
        "chunk_runs": 4}
LRS = [0.01, 0.03, 0.001]
SPEC = {**TINY, "grid": {"lr": LRS}}  # chunks: [lr0 × 2 seeds, lr1 × 2], [lr2 × 2, padding]
RUN_ONLY = ("worker", "wall_seconds")  # columns that depend on where and how fast a run ran
FLOAT_METRICS = ("episode_return", "loss", "policy_loss", "value_loss", "entropy", "grad_norm")

SCRIPT = """
import json, sys
import pgjax
spec, out, kwargs = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
pgjax.sweep(spec, out, **kwargs)
"""


def launch(out, env=None, **kwargs):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, json.dumps(SPEC), str(out), json.dumps(kwargs)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def wait(proc, timeout=240):
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, out[-3000:]


@pytest.fixture(scope="module")
def background(tmp_path_factory):
    """Start the 4-device sweep right away."""
    root = tmp_path_factory.mktemp("background")
    procs = {"sharded": launch(root / "sharded",
                               env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})}
    yield root, procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()


@pytest.fixture(scope="module")
def reference(background, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    return out, pgjax.sweep(SPEC, out)


def by_config_seed(out) -> dict[tuple, dict]:
    table = pd.read_csv(out / "results.csv")
    metrics = chunk_metrics(out)
    return {(r.lr, r.seed_index): metrics[r.run] for r in table.itertuples()}


def assert_same_runs(a: dict, b: dict, keys) -> None:
    for key in keys:
        for name, x in a[key].items():
            np.testing.assert_array_equal(x, b[key][name], err_msg=f"{key} {name}")


def test_a_sweep_run_is_the_run_of_pgjax_train(reference):
    """Seed i of a sweep trains with `seed_keys(seed, seeds)[i]`: the sweep's lr=0.03 runs match
    `train` called directly on that config and key (to rounding: other batch, constant leaves)."""
    out, table = reference
    row = table[(table.lr == 0.03) & (table.seed_index == 1)].iloc[0]
    config = pgjax.Config(num_envs=4, num_steps=20, total_timesteps=240, hidden=(8,), lr=0.03)
    _, metrics = jax.jit(train)(config, seed_keys(0, 2)[1])
    swept = chunk_metrics(out)[row.run]
    np.testing.assert_array_equal(swept["episodes"], metrics.episodes)
    for name in FLOAT_METRICS:
        np.testing.assert_allclose(swept[name], getattr(metrics, name), rtol=1e-5, atol=1e-6)


def test_plan_splits_static_fields_and_crosses_grid_with_samples():
    spec = parse_spec({
        **{k: v for k, v in TINY.items() if k != "hidden"}, "chunk_runs": 3,
        "grid": {"hidden": [[8], [16]], "lr": [0.01, 0.1]},
        "random": {"num_samples": 3, "ent_coef": {"log_uniform": [1e-4, 1e-1]},
                   "gamma": {"choice": [0.9, 0.99]}},
    })
    plan = make_plan(spec)
    assert len(plan.configs) == 2 * 2 * 3 and len(plan.runs) == 12 * 2
    assert [g.hidden for g in plan.groups] == [(8,), (16,)]
    for chunk in plan.chunks:  # no chunk mixes static groups; at most chunk_runs runs
        hidden = {plan.configs[plan.runs[r][0]].hidden for r in chunk.runs}
        assert hidden == {plan.groups[chunk.group].hidden} and len(chunk.runs) <= 3
    assert sorted(r for c in plan.chunks for r in c.runs) == list(range(24))
    ent = [c.ent_coef for c in plan.configs]
    assert all(1e-4 <= e <= 1e-1 for e in ent) and len(set(ent)) == 3
    assert {c.gamma for c in plan.configs} <= {0.9, 0.99}
    # every grid point gets the same draws; the same spec draws the same values
    assert ent[:3] == ent[3:6] == ent[9:12]
    assert [c.ent_coef for c in make_plan(spec).configs] == ent


def test_example_specs_plan():
    specs = sorted((Path(__file__).parent.parent / "experiments" / "sweeps").glob("*.yaml"))
    assert specs
    for path in specs:
        plan = make_plan(parse_spec(path))
        assert plan.chunks and len(plan.runs) == len(plan.configs) * plan.spec.seeds


def test_table_summary_and_files(reference):
    out, table = reference
    assert len(table) == 6 and list(table["run"]) == list(range(6))
    assert list(table["lr"]) == [lr for lr in LRS for _ in range(2)]
    assert list(table["seed_index"]) == [0, 1] * 3
    assert not table["diverged"].any() and (table["env_steps"] == 240).all()
    assert set(table["hidden"]) == {(8,)}  # as in Config: hashable, so it groups
    csv_table = pd.read_csv(out / "results.csv")
    assert set(csv_table["hidden"]) == {"[8]"}
    pd.testing.assert_frame_equal(csv_table[["run", "lr", "final_return", "auc"]],
                                  table[["run", "lr", "final_return", "auc"]])
    metrics = chunk_metrics(out)
    for row in table.itertuples():
        ret = metrics[row.run]["episode_return"]
        assert ret.shape == (3,) and row.final_return == ret[-1]
        assert np.isclose(row.auc, np.nanmean(ret))
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["rank"]) == [1, 2, 3] and sorted(summary["lr"]) == sorted(LRS)
    assert summary["final_iqm"].is_monotonic_decreasing
    assert (summary["final_ci95_low"] <= summary["final_iqm"]).all()
    assert (summary["final_iqm"] <= summary["final_ci95_high"]).all()
    assert json.loads((out / "summary.json").read_text())["runs"] == 6
    assert (out / "summary.png").stat().st_size > 5000
    assert not list(out.rglob(".*"))  # no temp files left behind


def test_batch_mates_do_not_change_a_run_and_divergence_stays_contained(reference, tmp_path):
    """A huge-lr config shares a batch with healthy runs; every healthy run is bitwise the run of
    the sweep without it, though lr=0.03 and lr=0.001 now sit elsewhere in other batches."""
    ref_out, _ = reference
    spec = {**SPEC, "grid": {"lr": [0.01, 1e38, 0.03, 0.001]}}
    table = pgjax.sweep(spec, tmp_path)
    assert table.loc[table.lr == 1e38, "diverged"].all()
    assert not table.loc[table.lr != 1e38, "diverged"].any()
    assert_same_runs(by_config_seed(tmp_path), by_config_seed(ref_out),
                     [(lr, s) for lr in LRS for s in (0, 1)])
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert summary.loc[summary.lr == 1e38, "diverged"].item() == 2


def test_interrupted_sweep_resumes_without_rerunning(reference, tmp_path):
    ref_out, ref_table = reference

    def stop(record):
        raise KeyboardInterrupt(f"killed after chunk {record['chunk']}")

    with pytest.raises(KeyboardInterrupt):
        pgjax.sweep(SPEC, tmp_path, on_chunk=stop)
    done = sorted(p.name for p in (tmp_path / "chunks").iterdir())
    assert done == ["chunk-000000.json", "chunk-000000.npz"]
    assert not (tmp_path / "results.csv").exists()
    first = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (tmp_path / "chunks").iterdir()}

    ran = []
    table = pgjax.sweep(SPEC, tmp_path, on_chunk=lambda r: ran.append(r["chunk"]))
    assert ran == [1]  # chunk 0 was not run again
    for path, (data, mtime) in first.items():
        assert path.read_bytes() == data and path.stat().st_mtime_ns == mtime
    again = []
    pd.testing.assert_frame_equal(pgjax.sweep(SPEC, tmp_path, on_chunk=again.append), table)
    assert again == []
    keep = [c for c in table.columns if c not in RUN_ONLY]
    pd.testing.assert_frame_equal(table[keep], ref_table[keep])
    assert_same_runs(chunk_metrics(tmp_path), chunk_metrics(ref_out), range(6))


KILL_SCRIPT = """
import json, os, signal, sys
import pgjax
spec, out = json.loads(sys.argv[1]), sys.argv[2]
pgjax.sweep(spec, out, on_chunk=lambda record: os.kill(os.getpid(), signal.SIGKILL))
"""


@pytest.mark.slow
def test_sigkilled_sweep_resumes_from_what_reached_disk(reference, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, json.dumps(SPEC), str(tmp_path)],
        env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    chunks = tmp_path / "chunks"
    assert sorted(p.name for p in chunks.iterdir()) == ["chunk-000000.json", "chunk-000000.npz"]
    # What a kill inside chunk 1's save would leave: its metrics without its record, and a
    # half-written temp file.
    (chunks / "chunk-000001.npz").write_bytes(b"PK\x03\x04 cut short")
    (chunks / ".chunk-000001.json.x1y2z3").write_text('{"chunk": 1, "ru')

    ran = []
    table = pgjax.sweep(SPEC, tmp_path, on_chunk=lambda r: ran.append(r["chunk"]))
    assert ran == [1]
    keep = [c for c in table.columns if c not in RUN_ONLY]
    pd.testing.assert_frame_equal(table[keep], reference[1][keep])
    assert_same_runs(chunk_metrics(tmp_path), chunk_metrics(reference[0]), range(6))


SIGTERM_SCRIPT = """
import os, signal, sys
from pgjax.cli import main
worker = sys.modules["pgjax.sweep.worker"]  # where the worker loop saves a chunk
save_chunk = worker.save_chunk

def save_then_signal(out_dir, result):  # as if the scheduler's SIGTERM came after chunk 0
    saved = save_chunk(out_dir, result)
    os.kill(os.getpid(), signal.SIGTERM)
    return saved

worker.save_chunk = save_then_signal
main(sys.argv[1:])
"""


def test_sigterm_stops_a_sweep_in_one_line_and_it_resumes(reference, tmp_path):
    """A one-process `pgjax sweep` stops at a SIGTERM: exit 143, one line, the chunk recorded
    kept and no claim left (another worker may take the rest at once); run again, it
    finishes the table of an uninterrupted sweep."""
    spec, out = tmp_path / "tiny.json", tmp_path / "out"
    spec.write_text(json.dumps(SPEC))
    argv = ["sweep", str(spec), "--out", str(out), "--no-progress"]
    proc = subprocess.run([sys.executable, "-c", SIGTERM_SCRIPT, *argv], capture_output=True,
                          text=True, timeout=240, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 143, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        "pgjax: SIGTERM: stopping once the chunk in progress is recorded or dropped (again: "
        "stop now)",
        "pgjax: stopped by SIGTERM: the chunks recorded are kept, and the same command resumes "
        "the sweep"]
    assert sorted(p.name for p in (out / "chunks").iterdir()) == ["chunk-000000.json",
                                                                  "chunk-000000.npz"]
    assert main(argv) is None
    table = pd.read_csv(out / "results.csv")
    keep = ["run", "lr", "final_return", "auc"]
    pd.testing.assert_frame_equal(table[keep], reference[1][keep])


def test_a_signal_while_a_chunk_trains_drops_it(reference, tmp_path, monkeypatch):
    computed, waits = sweep_run.computed, []

    def signal_during_chunk_1(tree, requested):
        waits.append(tree)
        if len(waits) == 2:  # chunk 0 was one piece: this is chunk 1's
            requested.append(signal.SIGTERM)
            return False
        return computed(tree, requested)

    monkeypatch.setattr(sweep_run, "computed", signal_during_chunk_1)
    with pytest.raises(pgjax.experiment.Stopped, match="the same command resumes the sweep"):
        pgjax.sweep(SPEC, tmp_path)
    assert sorted(p.name for p in (tmp_path / "chunks").iterdir()) == [
        "chunk-000000.json", "chunk-000000.npz"]


def test_a_worker_whose_training_hangs_loses_its_chunk(tmp_path, monkeypatch):
    """Claims are renewed while training makes progress: a worker hung inside a chunk lets its
    lease run out, and another worker trains the chunk (its result: attempt 2)."""
    spec = parse_spec({**SPEC, "grid": {"lr": [0.01]}})  # one chunk
    plan = make_plan(spec)
    computed, hang = sweep_run.computed, threading.Event()

    def hung(tree, requested):
        if threading.current_thread().name == "hung":
            hang.wait(120)
        return computed(tree, requested)

    monkeypatch.setattr(sweep_run, "computed", hung)
    options = {"lease_seconds": 0.5, "poll_seconds": 0.1}
    threading.Timer(90, hang.set).start()  # without the fix: the hung worker records it
    with prepare_out_dir(tmp_path, spec):
        hung_worker = threading.Thread(target=work, args=(tmp_path, plan, {}), name="hung",
                                       kwargs={"worker": "a", **options})
        hung_worker.start()
        while not list((tmp_path / "chunks").glob("chunk-000000.claim-1")):
            time.sleep(0.05)
        ran = work(tmp_path, plan, {}, worker="b", exit_when_idle=False, **options)
        hang.set()
        hung_worker.join(60)
    assert ran == [0]
    record = json.loads((tmp_path / "chunks" / "chunk-000000.json").read_text())
    assert (record["worker"], record["attempt"]) == ("b", 2)


def test_cli_sweep_prints_the_ranking_and_resumes(reference, tmp_path, capsys):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(
        "num_envs: 4\nnum_steps: 20\ntotal_timesteps: 240\nhidden: [8]\n"
        "grid:\n  lr: [1e-2, 3e-2, 1e-3]\nseeds: 2\nchunk_runs: 4\n"
    )
    out = tmp_path / "sweep"
    main(["sweep", str(spec), "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split()[:2] == ["rank", "lr"]
    assert "3 configs; results in" in printed
    first = (out / "results.csv").read_text()
    main(["sweep", str(spec), "--out", str(out), "--no-progress"])
    assert capsys.readouterr().out == printed and (out / "results.csv").read_text() == first
    ref = pd.read_csv(reference[0] / "results.csv").drop(columns=list(RUN_ONLY))
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv").drop(columns=list(RUN_ONLY)),
                                  ref)


def damaged_copy(reference, tmp_path, suffix: str) -> tuple[Path, bytes]:
    """A copy of the reference sweep whose chunk 0 has its `suffix` file cut short."""
    out = tmp_path / "sweep"
    shutil.copytree(reference[0], out)
    path = out / "chunks" / f"chunk-000000{suffix}"
    cut = path.read_bytes()[:100]
    path.write_bytes(cut)
    return out, cut


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_damaged_chunk_is_set_aside_and_trained_again(reference, tmp_path, capsys, suffix):
    out, cut = damaged_copy(reference, tmp_path, suffix)
    status = sweep_status(SPEC, out).splitlines()
    assert status[0].startswith("1 of 2 chunks recorded (2 of 6 runs)")
    assert status[1:] == ["damaged: chunks 0 (the next run of the sweep sets them aside and "
                          "trains them again)"]
    ran = []
    table = pgjax.sweep(SPEC, out, on_chunk=lambda r: ran.append(r["chunk"]))
    assert ran == [0]
    assert capsys.readouterr().err.splitlines() == [
        f"pgjax: chunk 0 of {out} is damaged; set aside as chunks/damaged-chunk-000000.*, "
        f"training it again"]
    assert (out / "chunks" / f"damaged-chunk-000000{suffix}").read_bytes() == cut
    keep = [c for c in table.columns if c not in RUN_ONLY]
    pd.testing.assert_frame_equal(table[keep], reference[1][keep])
    assert_same_runs(chunk_metrics(out), chunk_metrics(reference[0]), range(6))
    assert sweep_status(SPEC, out).splitlines()[1:] == ["merged: results.csv"]


def test_merge_sets_a_damaged_chunk_aside_for_the_next_run(reference, tmp_path):
    """A merge (--merge, or a launcher's) cannot train: it sets the damaged chunk aside and says
    so in its one line, and the next run finds the chunk unstarted."""
    out, cut = damaged_copy(reference, tmp_path, ".npz")
    with pytest.raises(IncompleteSweep, match=r"1 of 2 chunks not recorded \(chunks 0; damaged, "
                       r"set aside: chunk 0 as chunks/damaged-chunk-000000\.\*\); run the sweep"):
        merge_sweep(SPEC, out)
    assert sorted(p.name for p in (out / "chunks").glob("*chunk-000000*")) == [
        "damaged-chunk-000000.json", "damaged-chunk-000000.npz"]
    assert (out / "chunks" / "damaged-chunk-000000.npz").read_bytes() == cut
    assert sweep_status(SPEC, out).splitlines()[1:] == ["not started: chunks 0"]
    with pytest.raises(IncompleteSweep, match=r"not recorded \(chunks 0\); run the sweep"):
        merge_sweep(SPEC, out)


@pytest.mark.parametrize("edit", [{"lr": 0.05}, {"final_return": 499.5}, {"seed_index": 1}])
def test_a_chunk_whose_rows_disagree_with_the_plan_is_damaged(reference, tmp_path, edit):
    """Rows are checked against the plan and the chunk's metrics: an edited row (or a chunk of
    another spec) is not merged into the table."""
    out = tmp_path / "sweep"
    shutil.copytree(reference[0], out)
    path = out / "chunks" / "chunk-000001.json"
    record = json.loads(path.read_text())
    record["rows"][0].update(edit)
    path.write_text(json.dumps(record))
    with pytest.raises(IncompleteSweep, match=r"chunks 1; damaged, set aside: chunk 1 as"):
        merge_sweep(SPEC, out)
    table = pgjax.sweep(SPEC, out)
    keep = [c for c in table.columns if c not in RUN_ONLY]
    pd.testing.assert_frame_equal(table[keep], reference[1][keep])


def test_a_sweep_json_that_does_not_read_is_written_again(reference, tmp_path, capsys):
    out = tmp_path / "sweep"
    shutil.copytree(reference[0], out)
    (out / "sweep.json").write_text("{garbage")
    with pytest.raises(SpecError, match="its sweep.json does not read; pgjax sweep SPEC --out"):
        merge_sweep(SPEC, out)
    ran = []
    table = pgjax.sweep(SPEC, out, on_chunk=lambda r: ran.append(r["chunk"]))
    assert ran == []  # every chunk is this spec's: kept
    assert "its sweep.json does not read, so it is written again" in capsys.readouterr().err
    keep = [c for c in table.columns if c not in RUN_ONLY]
    pd.testing.assert_frame_equal(table[keep], reference[1][keep])
    chunk_files = [p.name for p in (out / "chunks").iterdir()]
    (out / "sweep.json").unlink()  # missing beside a sweep's files: not taken by another spec
    other = {**SPEC, "grid": {"lr": [0.02, 0.03, 0.001]}}
    with pytest.raises(SpecError, match="its sweep.json is missing, and its chunks are of "
                       "another sweep"):
        pgjax.sweep(other, out)
    assert sorted(p.name for p in (out / "chunks").iterdir()) == sorted(chunk_files)
    pgjax.sweep(SPEC, out, on_chunk=lambda r: ran.append(r["chunk"]))  # written for its spec
    assert ran == [] and (out / "sweep.json").is_file()
    for path in (out / "chunks").glob("chunk-*.json"):  # as an earlier pgjax wrote them
        record = json.loads(path.read_text())
        del record["sweep_sha256"]
        path.write_text(json.dumps(record))
    (out / "sweep.json").write_text("{garbage")
    with pytest.raises(SpecError, match="chunks recorded by an earlier pgjax do not say which "
                       "sweep they are of; restore sweep.json, or use another --out"):
        pgjax.sweep(SPEC, out)


def test_an_edited_sweep_json_is_refused(reference, tmp_path, capsys):
    out = tmp_path / "sweep"
    shutil.copytree(reference[0], out)
    held = json.loads((out / "sweep.json").read_text())
    held["spec"]["grid"]["lr"][0] = 0.5  # what a chunk recorded would no longer say
    (out / "sweep.json").write_text(json.dumps(held))
    for run in (lambda: merge_sweep(SPEC, out), lambda: pgjax.sweep(SPEC, out)):
        with pytest.raises(SpecError, match="its sweep.json was edited"):
            run()
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", str(spec), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.count("\n") == 0, err
    assert err.startswith("pgjax: error:") and "its sweep.json was edited" in err, err


def test_a_sweep_json_of_a_newer_format_is_refused_and_kept(reference, tmp_path):
    out = tmp_path / "sweep"
    shutil.copytree(reference[0], out)
    held = json.loads((out / "sweep.json").read_text())
    (out / "sweep.json").write_text(json.dumps({**held, "format": 99}))
    files = sorted(p.name for p in out.rglob("*"))
    for run in (lambda: merge_sweep(SPEC, out), lambda: pgjax.sweep(SPEC, out)):
        with pytest.raises(SpecError, match="its sweep.json has format 99; this pgjax reads "
                           "formats 1 to 2: a newer format needs a newer pgjax"):
            run()
    assert sorted(p.name for p in out.rglob("*")) == files


def test_sharded_over_4_devices_matches_single_device(background, reference):
    root, procs = background
    wait(procs["sharded"])
    out = root / "sharded"
    records = [json.loads(p.read_text()) for p in sorted((out / "chunks").glob("*.json"))]
    assert [(r["devices"], r["output_devices"], r["batch"]) for r in records] == [(4, 4, 4)] * 2
    sharded, single = chunk_metrics(out), chunk_metrics(reference[0])
    # XLA:CPU compiles a 4-device program with other loop splits and summation orders than a
    # 1-device one, so floats agree to rounding, not bitwise (about 1e-8 on these losses).
    worst = 0.0
    for run in range(6):
        for name in FLOAT_METRICS:
            a, b = sharded[run][name], single[run][name]
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"{run} {name}")
            worst = max(worst, float(np.nanmax(np.abs(a - b))))
        np.testing.assert_array_equal(sharded[run]["episodes"], single[run]["episodes"])
    print(f"sharded vs single device: max |difference| {worst:.3g}")
    a = pd.read_csv(out / "results.csv").drop(columns=list(RUN_ONLY))
    b = pd.read_csv(reference[0] / "results.csv").drop(columns=list(RUN_ONLY))
    pd.testing.assert_frame_equal(a, b, rtol=1e-5)


@pytest.mark.parametrize(
    "text, message",
    [
        ("lrr: 0.1\n", "unknown field 'lrr' in spec; did you mean lr?"),
        ("grid:\n  lrr: [0.1]\n", "grid: unknown config field 'lrr'; did you mean lr?"),
        ("grid: {}\n", "grid is empty"),
        ("grid:\n  lr: []\n", "grid: lr is an empty list"),
        ("grid:\n  lr: 0.1\n", "grid: lr must be a list of values"),
        ("grid:\n  lr: [0.1, fast]\n", "grid: lr must be a number, got 'fast'"),
        ("num_envs: 4.5\n", "num_envs must be an integer, got 4.5"),
        ("grid:\n  hidden: [32, 64]\n", "grid: hidden must be a list of integers, got 32"),
        ("seeds: 0\n", "seeds must be a positive integer, got 0"),
        ("seeds: -2\n", "seeds must be a positive integer, got -2"),
        ("chunk_runs: 0\n", "chunk_runs must be a positive integer"),
        ("random:\n  num_samples: 2\n  hidden: [[8], [16]]\n",
         "random: hidden is a static (shape) field"),
        ("random:\n  num_samples: 2\n  num_envs: {choice: [4, 8]}\n",
         "random: num_envs is a static (shape) field"),
        ("random:\n  lr: {uniform: [0.001, 0.01]}\n", "num_samples must be a positive integer"),
        ("random:\n  num_samples: 2\n  lr: {normal: [0, 1]}\n", "unknown distribution 'normal'"),
        ("random:\n  num_samples: 2\n  lr: {log_uniform: [0, 1]}\n", "log_uniform needs low > 0"),
        ("random:\n  num_samples: 2\n  lr: [0.1, 0.2]\n", "random: lr must be one of"),
        ("lr: 0.1\ngrid:\n  lr: [0.1]\n", "lr is set both as a base field and in grid"),
        ("grid:\n  gamma: [0.9, 1.5]\n", "gamma must be in [0, 1], got 1.5 (config gamma=1.5)"),
        ("env: CartPol\n", "unknown env 'CartPol'"),
        ("init_log_std: -1.0\n", "continuous actions only; CartPole-v1 is discrete"),
        # an estimator setting it does not read is a note, not printed before the error
        ("estimator: gae\nbaseline: none\nnetwork: cnn\n", "network='cnn' needs image"),
        ("- 1\n- 2\n", "a spec must be a mapping"),
        ("grid: [lr\n", "is not valid YAML"),
        ("grid:\n  lr: [0.01, 0.01]\n", "grid: lr lists 0.01 twice"),
        ("grid:\n  hidden: [[8], [8]]\n", "grid: hidden lists [8] twice"),
        ("lr: 0.5\nseeds: 2\nlr: 0.001\n", "bad.yaml: lr is given twice (line 3)"),
        ("random:\n  num_samples: 1\n  gamma: {uniform: [0.5, 1.01]}\n",
         "random: gamma: uniform [0.5, 1.01]: gamma must be in [0, 1], got 1.01"),
        ("random:\n  num_samples: 1\n  ent_coef: {uniform: [-1e308, 1e308]}\n",
         "is too wide to draw from"),
        ("random:\n  num_samples: 1\n  lr: {log_uniform: [1e-3, .inf]}\n",
         "log_uniform needs finite numbers"),
        (b"\xff\xfe x", "bad.yaml is not text (UTF-8)"),
        (("bad.json", '{"lr": 0.5, "lr": 0.1}'), "bad.json: lr is given twice"),
        (("bad.json", '{"lr": }'), "bad.json is not valid JSON (Expecting value"),
        (("bad.toml", "lr = \n"), "bad.toml is not valid TOML (Invalid value"),
    ],
)
def test_bad_spec_is_one_line(tmp_path, capsys, text, message):
    name, text = text if isinstance(text, tuple) else ("bad.yaml", text)
    spec = tmp_path / name
    spec.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("pgjax: error:"), err
    assert message in err, err
    assert not (tmp_path / "out").exists()


def test_missing_spec_and_foreign_out_dir(reference, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["sweep", str(tmp_path / "none.yaml")])
    assert f"spec {tmp_path / 'none.yaml'}: cannot read it" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(SpecError, match="exists and is not a pgjax sweep directory"):
        pgjax.sweep(SPEC, tmp_path)
    with pytest.raises(SpecError, match="holds a different sweep .spec differs in seeds"):
        pgjax.sweep({**SPEC, "seeds": 3}, reference[0])


def test_a_sweep_that_recorded_no_chunk_is_replaced(tmp_path, capsys):
    """A sweep stopped before its first chunk (say, out of memory) leaves sweep.json and maybe a
    dead claim; the next spec may take its directory, unless a live worker holds a chunk."""
    chunks = tmp_path / "chunks"
    prepare_out_dir(tmp_path, parse_spec({**SPEC, "chunk_runs": 64}))
    (chunks / "chunk-000000.claim-1").write_text(json.dumps({"expires": 0}))  # a dead worker's
    with pytest.raises(SpecError, match="holds a different sweep"):  # a launcher's: refused
        prepare_out_dir(tmp_path, parse_spec(SPEC))
    (tmp_path / "logs").mkdir()  # launched as jobs, which may still be queued: refused
    with pytest.raises(SpecError, match="holds a different sweep"):
        prepare_out_dir(tmp_path, parse_spec(SPEC), replace_unstarted=True)
    (tmp_path / "logs").rmdir()
    prepare_out_dir(tmp_path, parse_spec(SPEC), replace_unstarted=True)
    assert "held another sweep, which recorded no chunk" in capsys.readouterr().err
    assert json.loads((tmp_path / "sweep.json").read_text())["spec"]["chunk_runs"] == 4
    assert not list(chunks.iterdir())
    live = claims.acquire(chunks, "chunk-000001", 0, claims.this_holder(), 60.0)
    with pytest.raises(SpecError, match="holds a different sweep .spec differs in seeds"):
        prepare_out_dir(tmp_path, parse_spec({**SPEC, "seeds": 3}), replace_unstarted=True)
    claims.release(live)
    (chunks / "damaged-chunk-000000.json").write_text("{")  # a chunk was trained
    with pytest.raises(SpecError, match="holds a different sweep .spec differs in seeds"):
        prepare_out_dir(tmp_path, parse_spec({**SPEC, "seeds": 3}), replace_unstarted=True)


def corridor() -> pgjax.Env:
    return pgjax.Env("corridor", env=ShortCorridor(), params=EnvParams())


CORRIDOR = {**TINY, "grid": {"lr": [0.01, 0.03]}}  # 2 configs × 2 seeds: one chunk of 4 runs


def test_sweep_of_an_unregistered_env_component(tmp_path):
    table = pgjax.sweep(CORRIDOR, tmp_path, env=corridor())
    assert len(table) == 4 and list(table["lr"]) == [0.01, 0.01, 0.03, 0.03]
    assert (table["env"] == "corridor").all()
    # every step costs −1 and episodes (≥ 3 steps) finish within the 20-step window
    assert np.isfinite(table["final_return"]).all() and (table["final_return"] <= -3).all()
    assert not table["diverged"].any()
    assert (pd.read_csv(tmp_path / "results.csv")["env"] == "corridor").all()
    record = json.loads((tmp_path / "sweep.json").read_text())
    assert record["components"] == {"given": ["env"], "env": "corridor",
                                    "env_params": {"max_steps_in_episode": 100}}
    # the same spec without the component is another sweep: refused, nothing run
    with pytest.raises(SpecError, match="other components .env=corridor, not none given"):
        pgjax.sweep(CORRIDOR, tmp_path)
    shorter = pgjax.Env("corridor", env=ShortCorridor(), params=EnvParams(max_steps_in_episode=50))
    with pytest.raises(SpecError, match="other components .env params max_steps_in_episode=100, "
                       "not max_steps_in_episode=50.;"):
        pgjax.sweep(CORRIDOR, tmp_path, env=shorter)
    again = []
    pgjax.sweep(CORRIDOR, tmp_path, env=corridor(), on_chunk=again.append)
    assert again == []  # resumed: nothing left to run


class ByIdentity:  # an estimator whose repr is its address
    uses_value = False

    def __call__(self, inputs):
        return pgjax.build(pgjax.Config()).estimator(inputs)


def test_a_sweep_resumes_only_with_components_of_the_same_settings(tmp_path):
    pgjax.sweep(CORRIDOR, tmp_path, env=corridor(), policy=BiasedPolicy(p_right=0.1))
    with pytest.raises(SpecError, match=r"other components .policy BiasedPolicy\(p_right=0.1\), "
                       r"not BiasedPolicy\(p_right=0.9\)"):
        pgjax.sweep(CORRIDOR, tmp_path, env=corridor(), policy=BiasedPolicy(p_right=0.9))
    reordered = {**TINY, "grid": {"gamma": [0.9, 0.99], "lr": [0.01, 0.03]}}
    pgjax.sweep({**TINY, "grid": dict(reversed(reordered["grid"].items()))}, tmp_path / "o")
    with pytest.raises(SpecError, match="holds this sweep with its grid fields in another order "
                       r"\(lr, gamma\), which numbers its runs otherwise"):
        pgjax.sweep(reordered, tmp_path / "o")


def test_a_sweep_of_an_estimator_shown_by_identity_resumes(tmp_path):
    pgjax.sweep(TINY, tmp_path, estimator=ByIdentity())
    again = []
    pgjax.sweep(TINY, tmp_path, estimator=ByIdentity(), on_chunk=again.append)  # a new object
    assert again == []


@pytest.mark.parametrize(
    "spec, components, message",
    [
        (SPEC, {"policy": LogitsOnly()}, "the policy returned .* which has no sample"),
        ({**SPEC, "env": "CartPole-v1"}, {"env": "corridor"},
         "env must be a pgjax.Env, a gymnax Environment"),
        ({**SPEC, "env": "CartPole-v1"}, {"env": corridor()},
         "the spec names env 'CartPole-v1' but the env component is 'corridor'"),
        ({**SPEC, "grid": {"env": ["CartPole-v1"]}}, {"env": corridor()},
         "grid: env cannot vary"),
        (SPEC, {"value": pgjax.ValueNet((8,))}, "a value net was given but ReturnToGo"),
        ({**SPEC, "seed": 2**32}, {}, r"seed must be an integer in \[0, 2\*\*32\), got "
         "4294967296: it would be seed 0"),
    ],
)
def test_bad_component_fails_before_any_work(tmp_path, spec, components, message):
    with pytest.raises(SpecError, match=message) as info:
        pgjax.sweep(spec, tmp_path / "out", **components)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_compile_cache_keys_components_by_value_else_identity():
    assert components_key({"env": corridor()}) == components_key({"env": corridor()})
    assert components_key({"env": corridor()}) != components_key({})
    assert components_key({"env": corridor()}) != components_key(
        {"env": pgjax.Env("corridor", env=ShortCorridor(), params=EnvParams(50))}
    )
    unhashable = {"policy": [1, 2]}  # e.g. an object holding a list
    assert components_key(unhashable) == (("policy", ("id", id(unhashable["policy"]))),)


def test_a_spec_reads_from_yaml_json_toml_and_numpy_values(tmp_path):
    (tmp_path / "s.yaml").write_text("lr: 0.01\nseeds: 2\ngrid:\n  gamma: [0.9, 0.99]\n")
    (tmp_path / "s.json").write_text('{\n\t"lr": 0.01,\n\t"seeds": 2,\n\t"grid": '
                                     '{"gamma": [0.9, 0.99]}\n}\n')  # tabs: not YAML
    (tmp_path / "s.toml").write_text("lr = 0.01\nseeds = 2\n[grid]\ngamma = [0.9, 0.99]\n")
    specs = [parse_spec(tmp_path / f"s.{suffix}") for suffix in ("yaml", "json", "toml")]
    specs.append(parse_spec({"lr": np.float64(0.01), "seeds": np.int64(2),
                             "grid": {"gamma": [np.float64(0.9), 0.99]}}))
    assert all(spec == specs[0] for spec in specs), specs


def test_lease_seconds_must_be_finite(tmp_path, capsys):
    with pytest.raises(SpecError, match="lease_seconds must be positive and under 1e"):
        pgjax.sweep(SPEC, tmp_path / "py", lease_seconds=float("inf"))
    assert not (tmp_path / "py").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", "x.yaml", "--out", str(tmp_path / "cli"), "--lease-seconds", "inf"])
    assert exit_info.value.code == 2
    assert "--lease-seconds must be positive and under 1e+09" in capsys.readouterr().err


def test_chunk_records_are_strict_json(tmp_path):
    # One update of 4 steps: no episode finishes, final_return and auc are NaN.
    table = pgjax.sweep({"num_envs": 4, "num_steps": 4, "total_timesteps": 16, "hidden": [8],
                         "seeds": 2}, tmp_path)
    assert table["final_return"].isna().all() and table["auc"].isna().all()

    def strict(constant):
        raise ValueError(f"{constant} is not JSON")

    for path in [*(tmp_path / "chunks").glob("*.json"), tmp_path / "summary.json"]:
        json.loads(path.read_text(), parse_constant=strict)
    (record_path,) = (tmp_path / "chunks").glob("chunk-*.json")
    record = json.loads(record_path.read_text())
    assert [row["hidden"] for row in record["rows"]] == [[8], [8]]
    del record["format"]  # as earlier versions wrote it
    for row in record["rows"]:
        row["hidden"] = "[8]"
    record_path.write_text(json.dumps(record))
    again = merge_sweep({"num_envs": 4, "num_steps": 4, "total_timesteps": 16,
                         "hidden": [8], "seeds": 2}, tmp_path)
    assert again["final_return"].isna().all() and list(again["hidden"]) == [(8,), (8,)]


def test_status_names_a_claim_whose_process_is_gone(reference, tmp_path):
    out = tmp_path / "sweep"
    shutil.copytree(reference[0], out)
    for suffix in (".json", ".npz"):
        (out / "chunks" / f"chunk-000001{suffix}").unlink()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    holder = claims.this_holder("job 7")._replace(pid=int(gone.stdout))
    claims.claim_path(out / "chunks", "chunk-000001", 1).write_text(
        json.dumps({**holder._asdict(), "expires": time.time() + 600}))
    assert sweep_status(SPEC, out).splitlines()[1] == (
        f"chunk 1: job 7 on {holder.host}, attempt 1, its process is gone: the next worker "
        f"takes it over")


def test_chunks_recorded_by_an_earlier_version_still_merge(reference, tmp_path):
    """Rows with `process` for `worker`, metrics without `diverged`, no sweep_sha256."""
    out = tmp_path / "sweep"
    shutil.copytree(reference[0], out)
    path = out / "chunks" / "chunk-000000.json"
    record = json.loads(path.read_text())
    del record["sweep_sha256"], record["format"]
    for row in record["rows"]:
        row["process"] = row.pop("worker")
    path.write_text(json.dumps(record))
    npz = out / "chunks" / "chunk-000000.npz"
    with np.load(npz) as data:
        arrays = {name: data[name] for name in data.files if name != "diverged"}
    np.savez(npz, **arrays)
    table = merge_sweep(SPEC, out)
    keep = [c for c in table.columns if c not in RUN_ONLY]
    pd.testing.assert_frame_equal(table[keep], reference[1][keep])


@pytest.mark.parametrize("other", [{"seed": 1}, {"total_timesteps": 480}])
def test_a_sweep_of_another_spec_is_refused_while_a_worker_works(tmp_path, other):
    """Two sweeps of specs differing only in seed (or budget) started on one new --out: the
    second is refused in one line while the first's worker works (holds the directory's lock),
    though that worker has not claimed a chunk yet."""
    held = prepare_out_dir(tmp_path, parse_spec(SPEC))  # the lock a worker holds
    with pytest.raises(SpecError, match="holds a different sweep .spec differs in"):
        pgjax.sweep({**SPEC, **other}, tmp_path)
    del held
    assert json.loads((tmp_path / "sweep.json").read_text())["spec"]["seed"] == 0


def test_a_worker_records_its_chunks_under_its_own_specs_id(tmp_path):
    """A worker of the seed-1 spec whose sweep.json holds the seed-0 spec records its chunks
    under its own spec's `sweep_id`, never the one on disk: the seed-0 sweep does not take
    them as its own."""
    prepare_out_dir(tmp_path, parse_spec(SPEC))
    work(tmp_path, make_plan(parse_spec({**SPEC, "seed": 1})), {}, exit_when_idle=False)
    with pytest.raises(IncompleteSweep, match="2 of 2 chunks not recorded"):
        merge_sweep(SPEC, tmp_path)


@pytest.mark.parametrize("field, value", [("expires", "never"), ("expires", None),
                                          ("pid", "abc")])
def test_a_malformed_claim_is_damaged_not_a_traceback(tmp_path, field, value):
    prepare_out_dir(tmp_path, parse_spec(SPEC))
    me, chunks = claims.this_holder(), tmp_path / "chunks"
    claim = {**me._asdict(), "pid": me.pid + 1, "expires": time.time() + 60, field: value}
    claims.claim_path(chunks, "chunk-000000", 1).write_text(json.dumps(claim))
    assert "not started: chunks 0-1" in sweep_status(SPEC, tmp_path)  # was: TypeError
    assert claims.read(chunks, "chunk-000000", 1) is None
    assert claims.acquire(chunks, "chunk-000000", 1, me, 60.0).attempt == 2


@pytest.mark.parametrize("size", [{"seeds": 10**12},
                                  {"random": {"num_samples": 10**9, "lr": {"uniform": [0, 1]}}},
                                  {"grid": {"lr": [i / 1e4 for i in range(1, 3001)],
                                            "gamma": [i / 1e4 for i in range(1, 3001)]}}])
def test_a_sweep_too_large_to_plan_is_refused_in_one_line(tmp_path, capsys, size):
    with pytest.raises(SpecError, match="runs .grid points × num_samples × seeds.; a sweep"):
        parse_spec({**TINY, **size})  # before any plan is built
    spec = tmp_path / "huge.json"
    spec.write_text(json.dumps({**TINY, **size}))
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--no-progress"])
    assert exit_info.value.code == 2 and time.perf_counter() - start < 10
    err = capsys.readouterr().err.strip()
    assert err.startswith("pgjax: error: the spec asks for ") and "at most 1,048,576" in err, err
    assert len(err.splitlines()) == 1 and not (tmp_path / "out").exists()
