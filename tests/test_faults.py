"""Faults and bad input on the host side: one line on stderr, exit status 2, nothing lost."""

import csv
import dataclasses
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from cli_calls import cli

import pgjax
from pgjax import records, runs
from pgjax.cli import main

TINY = ["--total-timesteps", "4000", "--num-envs", "8", "--num-steps", "100", "--seeds", "2",
        "--chunks", "5", "--checkpoint-every", "1"]


def one_line_error(code, err, message):
    assert code == 2, err
    last = err.splitlines()[-1]
    assert last.startswith("pgjax: error: ") and message in last, err
    assert "Traceback" not in err, err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished tiny run with checkpoints at every chunk (5 updates)."""
    out = tmp_path_factory.mktemp("runs") / "done"
    main(["train", *TINY, "--out", str(out), "--no-progress"])
    return out


def copy_run(run_dir, tmp_path, name="run") -> Path:
    target = tmp_path / name
    shutil.copytree(run_dir, target)
    return target


def garble(step_dir: Path) -> None:
    for f in step_dir.rglob("*"):
        if f.is_file():
            f.write_text("garbage")


def metrics_rows(run_dir):
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    return [{k: v for k, v in row.items() if k != "wall_seconds"} for row in rows]


def test_resume_past_a_damaged_newest_checkpoint_moves_it_aside(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path)
    (run / "summary.json").unlink()
    garble(run / "checkpoints" / "5")
    code, err = cli(capsys, "train", "--resume", str(run), "--no-progress")
    assert code == 0 and "checkpoint 5 is damaged" in err, err
    assert (run / "checkpoints" / "damaged-5").is_dir()
    code, err = cli(capsys, "train", "--resume", str(run), "--no-progress")  # finished
    assert code == 0 and "damaged" not in err, err
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit())[-1] == "5"
    assert metrics_rows(run) == metrics_rows(finished_run)


def cut_metrics_in_row(run_dir: Path, row: int) -> None:
    """metrics.csv cut short in the middle of row `row` (a disk that failed after training)."""
    lines = (run_dir / "metrics.csv").read_text().splitlines(keepends=True)
    (run_dir / "metrics.csv").write_text("".join(lines[:row]) + lines[row][:30])


@pytest.mark.parametrize("data, whole, damaged", [
    (b"update,steps,wall\n1,4,0.5\n2,8,nan\n3,12,-1\n", 3, False),
    (b"update,steps,wall\r\n1,4,0.5\r\n2,8,nan\r\n", 2, False),  # csv.writer's line ends
    (b"update,steps,wall\n1,4,0.5\n2,8,0.\n3", 2, True),  # cut in row 3
    (b"update,steps,wall\n1,4,0.5\n2,8,0.5\n3,12,25", 2, True),  # cut inside a number
    (b"update,steps,wall\n1,4,0.5\n2,8\n3,12,1\n", 1, True),  # a short row
    (b"update,steps,wall\n1,4,0.5\n3,12,1\n", 1, True),  # a row missing
    (b"update,steps,wall\n1,4,0.5\n2,8,zz\n", 1, True),
    (b"update,env_steps,wall\n1,4,0.5\n2.0,8,0.5\n", 1, True),  # an update that is no integer
    (b"update,env_steps,wall\n1,4,0.5\n2,8e0,0.5\n", 1, True),
    (b"update,steps,wall\n1,4,0.5\n2,8,0.5\n" + b"\0" * 1000, 2, True),  # zeroed blocks
    (b"update,steps,wall\n1,4,0.5\n2,8,0.\xff5\n3,12,1\n", 1, True),  # not UTF-8
    (b"update,steps,wall\n", 0, False),
    (b"", 0, False),
])
def test_whole_rows_stop_at_the_first_damaged_row(tmp_path, data, whole, damaged):
    (tmp_path / "metrics.csv").write_bytes(data)
    assert pgjax.runs.whole_rows(tmp_path / "metrics.csv") == whole
    assert pgjax.runs.whole_rows(tmp_path / "missing.csv") == 0
    if damaged:
        with pytest.raises(ValueError, match=f"damaged at row {whole + 1}$"):
            pgjax.runs.read_metrics(tmp_path)
    elif whole:
        assert list(pgjax.runs.read_metrics(tmp_path)["update"]) == list(range(1, whole + 1))
    else:
        with pytest.raises(ValueError, match="has no rows"):
            pgjax.runs.read_metrics(tmp_path)
    if whole:  # a resume keeps the whole rows as they were written
        kept = pgjax.runs.MetricsCSV(tmp_path / "metrics.csv", 0, keep_updates=whole)
        assert kept.path.read_text().splitlines()[1:] == \
            data.decode(errors="replace").splitlines()[1 : whole + 1]


def test_resume_trains_again_the_updates_a_damaged_metrics_csv_lost(finished_run, tmp_path,
                                                                    capsys):
    run = copy_run(finished_run, tmp_path)
    (run / "summary.json").unlink()
    cut_metrics_in_row(run, 5)  # the last 3 updates keep checkpoints: 3, 4 and 5
    code, err = cli(capsys, "plot", str(run))
    one_line_error(code, err, "damaged at row 5")
    code, err = cli(capsys, "train", "--resume", str(run), "--no-progress")
    assert code == 0 and "checkpoint 5 is past the 4 whole rows of metrics.csv" in err, err
    assert "checkpoint 4 is past" not in err, err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "3", "4", "5", "ahead-5", "digests"]
    assert pgjax.experiment.compare_metrics(run, finished_run) is None
    assert metrics_rows(run) == metrics_rows(finished_run)


def test_resume_with_no_metrics_row_left_starts_over(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path)
    (run / "summary.json").unlink()
    (run / "metrics.csv").unlink()
    code, err = cli(capsys, "train", "--resume", str(run), "--no-progress")
    assert code == 0 and "checkpoint 3 is past the 0 whole rows" in err, err
    assert (run / "checkpoints" / "ahead-3").is_dir()
    assert pgjax.experiment.compare_metrics(run, finished_run) is None


def test_all_checkpoints_damaged_is_one_line_that_names_the_way_out(finished_run, tmp_path,
                                                                    capsys):
    """Nothing is moved or cut: a failure that is not damage (memory, a network disk) reads
    as damage too. Moving checkpoints/ aside trains the run again from the start."""
    run = copy_run(finished_run, tmp_path)
    (run / "summary.json").unlink()
    for step in ("3", "4", "5"):
        garble(run / "checkpoints" / step)
    before = (run / "metrics.csv").read_text()
    code, err = cli(capsys, "eval", str(run), "--episodes", "2")
    one_line_error(code, err, "no readable checkpoint")
    code, err = cli(capsys, "train", "--resume", str(run), "--no-progress")
    one_line_error(code, err, f"no readable checkpoint in {run.absolute()}/checkpoints; to train "
                   f"the run again from the start (the same numbers), move")
    assert sum("is damaged" in line for line in err.splitlines()) == 3, err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["3", "4", "5", "digests"]
    assert (run / "metrics.csv").read_text() == before
    (run / "checkpoints").rename(run.parent / "checkpoints-damaged")
    code, err = cli(capsys, "train", "--resume", str(run), "--no-progress")
    assert code == 0, err
    assert pgjax.experiment.compare_metrics(run, finished_run) is None
    assert metrics_rows(run) == metrics_rows(finished_run)


def test_a_finished_run_with_damaged_metrics_is_trained_again(finished_run, tmp_path, capsys):
    """A finished run whose metrics.csv lost rows is not finished: resume (and scripts that
    reuse runs, `ensure_run`) trains the lost updates again instead of printing the summary."""
    run = copy_run(finished_run, tmp_path)
    cut_metrics_in_row(run, 2)
    config, _ = pgjax.experiment.load_run(run)
    assert pgjax.experiment.finished(run, config) is None
    assert pgjax.experiment.ensure_run(config, run, seeds=2)[0] == "resumed"
    assert pgjax.experiment.compare_metrics(run, finished_run) is None
    assert metrics_rows(run) == metrics_rows(finished_run)


def test_a_run_another_process_writes_is_not_moved_aside(finished_run, tmp_path):
    """`ensure_run` moves a run of another config aside only under its lock: the directory of
    a live writer stays where it is, and the caller gets one line naming the holder."""
    run = copy_run(finished_run, tmp_path)
    other = pgjax.experiment.load_run(run)[0].replace(lr=0.5)
    with records.DirLock(run).exclusive():  # as a process training into it holds it
        with pytest.raises(records.Locked, match=rf"^{run} is in use by pgjax pid {os.getpid()}"):
            pgjax.experiment.ensure_run(other, run, seeds=2)
    assert not list(tmp_path.glob("run.replaced-*"))
    assert pgjax.experiment.load_run(run)[0] != other


def test_checkpoints_that_is_a_file_is_one_line(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path)
    (run / "summary.json").unlink()
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").write_text("not a folder")
    before = (run / "metrics.csv").read_text()
    code, err = cli(capsys, "train", "--resume", str(run), "--no-progress")
    one_line_error(code, err, f"{run.absolute()}/checkpoints is not a directory")
    assert (run / "metrics.csv").read_text() == before


STOPPED_BY_SIGNAL = """
import os, signal, sys
from pgjax import records, runs
from pgjax.cli import main
append = runs.MetricsCSV.append

def append_then_signal(self, *args):  # as if the scheduler's SIGTERM came during update 2
    rows = append(self, *args)
    if rows[0]["update"] == 2:
        os.kill(os.getpid(), signal.SIGTERM)
    return rows

runs.MetricsCSV.append = append_then_signal
main(sys.argv[1:])
"""


def test_sigterm_stops_at_a_chunk_end_with_its_checkpoint(finished_run, tmp_path, capsys):
    """SIGTERM (a scheduler's preemption notice) stops the run once the chunk being written is
    checkpointed, exit status 143; the resumed run equals an uninterrupted one."""
    run = tmp_path / "run"
    argv = ["train", *TINY[:-2], "--out", str(run), "--no-progress"]  # checkpoint by minutes
    proc = subprocess.run([sys.executable, "-c", STOPPED_BY_SIGNAL, *argv], capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "pgjax: SIGTERM: stopping once the last chunk written is checkpointed (again: stop "
        "now)",
        f"pgjax: stopped by SIGTERM at update 2; its checkpoint is saved: resume with pgjax "
        f"train --resume {run}"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["2", "digests"]
    assert not (run / "summary.json").exists()
    code, err = cli(capsys, "train", "--resume", str(run), "--no-progress")
    assert code == 0, err
    assert pgjax.experiment.compare_metrics(run, finished_run) is None


def test_a_signal_in_the_last_chunk_stops_once_the_run_is_written(finished_run, tmp_path,
                                                                  monkeypatch):
    append = pgjax.runs.MetricsCSV.append

    def append_then_signal(self, *args):
        rows = append(self, *args)
        if rows[-1]["update"] == 5:  # the last update
            os.kill(os.getpid(), signal.SIGTERM)
        return rows

    monkeypatch.setattr(pgjax.runs.MetricsCSV, "append", append_then_signal)
    config = pgjax.experiment.load_run(finished_run)[0]
    with pytest.raises(pgjax.experiment.Stopped) as stopped:
        pgjax.train_run(config, tmp_path / "run", seeds=2, chunks=5, progress=False)
    assert (stopped.value.update, stopped.value.exit_status) == (5, 143)
    assert (tmp_path / "run" / "summary.json").exists()  # the run is whole
    assert pgjax.experiment.compare_metrics(tmp_path / "run", finished_run) is None


def test_a_signal_while_a_chunk_trains_stops_at_the_last_chunk_written(finished_run, tmp_path,
                                                                       monkeypatch):
    """The chunk in progress is dropped: the state of the rows written is checkpointed."""
    computed, calls = pgjax.experiment._computed, []

    def signal_during_chunk_3(tree, requested):
        calls.append(1)
        if len(calls) == 3:  # as `_computed` answers a signal that comes while chunk 3 runs
            requested.append(signal.SIGTERM)
            return False
        return computed(tree, requested)

    monkeypatch.setattr(pgjax.experiment, "_computed", signal_during_chunk_3)
    config = pgjax.experiment.load_run(finished_run)[0]
    run = tmp_path / "run"
    with pytest.raises(pgjax.experiment.Stopped) as stopped:
        pgjax.train_run(config, run, seeds=2, chunks=5, progress=False)
    assert stopped.value.update == 2 and len(metrics_rows(run)) == 2
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["2", "digests"]
    monkeypatch.undo()
    pgjax.train_run(None, run, resume=True, progress=False)
    assert pgjax.experiment.compare_metrics(run, finished_run) is None


def test_waiting_for_a_chunk_ends_when_a_signal_comes(monkeypatch):
    computed = threading.Event()
    monkeypatch.setattr(pgjax.experiment.jax, "block_until_ready",
                        lambda tree: computed.wait(30))
    class Computing:  # an array still being computed
        def is_ready(self):
            return computed.is_set()

    requested = []
    threading.Timer(0.3, requested.append, [signal.SIGTERM]).start()
    t = time.perf_counter()
    assert pgjax.experiment._computed([Computing()], requested) is False
    assert time.perf_counter() - t < 2
    threading.Timer(0.3, computed.set).start()  # the waiting threads end
    assert pgjax.experiment._computed([Computing()], []) is True
    assert pgjax.experiment._computed([Computing()], []) is True  # computed: no thread


def test_sigterm_while_a_long_chunk_computes_drops_it(tmp_path):
    """A real SIGTERM while the second of two chunks (seconds each) computes: pgjax train
    stops without waiting for it, at the first chunk's update with its checkpoint."""
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgjax.cli", "train", "--num-envs", "64", "--num-steps", "500",
         "--total-timesteps", str(2 * 60 * 64 * 500), "--chunks", "2", "--seeds", "1",
         "--out", str(run), "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not (run / "metrics.csv").is_file() or \
            len((run / "metrics.csv").read_text().splitlines()) < 61:  # the first chunk's rows
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 143, err
    assert "stopped by SIGTERM at update 60; its checkpoint is saved" in err, err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["60", "digests"]
    assert runs.whole_rows(run / "metrics.csv") == 60 and not (run / "summary.json").exists()


@pytest.fixture
def sigint_default():
    """SIGINT handled as Python starts a foreground process (a suite run as a background job
    starts with SIGINT ignored)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_a_second_signal_stops_at_once(sigint_default):
    with pgjax.experiment.stop_requests() as requested:
        os.kill(os.getpid(), signal.SIGINT)
        assert requested == [signal.SIGINT]
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_an_ignored_or_taken_signal_is_left_alone(sigint_default):
    """A process started with SIGINT ignored (nohup, a background job) keeps ignoring it, and a
    handler the program around pgjax set (e.g. submitit's SIGTERM) stays in place."""
    def theirs(signum, frame):
        calls.append(signum)

    calls = []
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    before = signal.signal(signal.SIGTERM, theirs)
    try:
        with pgjax.experiment.stop_requests() as requested:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
            assert requested == [] and calls == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is theirs
    finally:
        signal.signal(signal.SIGTERM, before)


STOPPED_WHILE_COMPILING = """
import os, signal, sys
from pgjax import experiment
from pgjax.cli import main
compile_programs = experiment.compile_programs

def compile_then_signal(*args):  # as if SIGTERM came while XLA compiles
    os.kill(os.getpid(), signal.SIGTERM)
    return compile_programs(*args)

experiment.compile_programs = compile_then_signal
main(sys.argv[1:])
"""


def test_sigterm_while_compiling_stops_before_anything_is_written(tmp_path):
    run = tmp_path / "run"
    argv = ["train", *TINY, "--out", str(run), "--no-progress"]
    proc = subprocess.run([sys.executable, "-c", STOPPED_WHILE_COMPILING, *argv],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip().splitlines()[-2:] == [
        "pgjax: SIGTERM: stopping once the last chunk written is checkpointed (again: stop "
        "now)",
        "pgjax: stopped by SIGTERM before training started; nothing was written"]
    assert not run.exists()


@pytest.mark.parametrize("flag, value", [("--lr", "inf"), ("--ent-coef", "nan"),
                                         ("--gamma", "nan"), ("--max-grad-norm", "inf"),
                                         ("--lr", "1e39"), ("--max-grad-norm", "1e300")])
def test_non_finite_hyperparameters_are_refused(flag, value, tmp_path, capsys):
    code, err = cli(capsys, "train", *TINY, flag, value, "--out", str(tmp_path / "x"))
    one_line_error(code, err, "must be finite in float32")  # 1e39 is inf in float32
    assert not (tmp_path / "x").exists()


def test_more_updates_than_the_update_counter_holds_are_refused(tmp_path, capsys):
    t = time.perf_counter()
    code, err = cli(capsys, "train", *TINY, "--total-timesteps", "99999999999999999999")
    one_line_error(code, err, "is 124999999999999999 updates of num_envs × num_steps = 800; "
                   "at most 2147483647")
    assert time.perf_counter() - t < 5


@dataclasses.dataclass(frozen=True)
class Exploding:
    """An estimator whose advantages are infinite: every loss is NaN."""

    uses_value = False

    def __call__(self, inputs):
        batch = inputs.batch
        g = pgjax.discounted_returns(batch.reward, batch.done, inputs.gamma)
        return pgjax.Targets(g, g * jnp.inf, None, None)


@pytest.mark.slow
def test_a_diverged_run_is_flagged(tmp_path):
    config = pgjax.Config(num_envs=8, num_steps=100, total_timesteps=4000)
    run_dir, summary = pgjax.train_run(config, tmp_path / "x", seeds=2, progress=False,
                                       estimator=Exploding())
    assert summary["diverged_seeds"] == [0, 1]
    from pgjax.experiment import format_summary

    assert "DIVERGED 2 of 2" in format_summary(summary, run_dir)
    good = pgjax.train_run(config, tmp_path / "y", seeds=2, progress=False)[1]
    assert good["diverged_seeds"] == []


def test_the_final_return_leaves_diverged_seeds_out():
    class Returns:  # metrics.csv's per-seed returns [seeds, updates]
        def returns(self):
            return np.array([[1.0, 2.0], [3.0, 1e6], [5.0, 4.0]])

    config = pgjax.Config(num_envs=8, num_steps=100, total_timesteps=1600)
    summary = pgjax.experiment.summarize(config, Returns(), np.array([False, True, False]),
                                         seeds=3, start=None, wall=1.0, compile_seconds=1.0)
    final = summary["final_return"]
    assert final["per_seed"] == [2.0, 1e6, 4.0] and final["mean"] == 3.0
    assert final["ci95"][1] <= 4.0 and summary["diverged_seeds"] == [1]
    text = pgjax.experiment.format_summary(summary, Path("run"))
    assert "final return, mean          3.00 (diverged seeds left out)" in text
    assert "final return, min / max     2.00 / 4.00" in text


def test_unwritable_out_is_one_line(capsys):
    if not Path("/sys").is_dir():
        pytest.skip("no /sys here")
    code, err = cli(capsys, "train", *TINY, "--out", "/sys/pgjax-run")  # a read-only filesystem
    one_line_error(code, err, "/sys/pgjax-run")


@pytest.mark.slow
def test_full_disk_is_one_line_and_resumes(tmp_path, capsys):
    small = tmp_path / "small"
    small.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(small)],
                           capture_output=True)
    if mount.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        args = ["train", "--num-envs", "8", "--num-steps", "100", "--total-timesteps", "16000",
                "--seeds", "2", "--hidden", "128", "128", "--chunks", "4", "--no-progress"]
        proc = subprocess.run([sys.executable, "-m", "pgjax.cli", *args, "--out",
                               str(small / "run")], capture_output=True, text=True, timeout=300)
        assert proc.stderr.count("\n") == 1, proc.stderr  # no orbax tracebacks
        one_line_error(proc.returncode, proc.stderr.strip(), "no space left on device")
        assert "--resume" in proc.stderr
        shutil.copytree(small / "run", tmp_path / "run")  # "free space": move it elsewhere
    finally:
        subprocess.run(["umount", str(small)], check=True)
    code, err = cli(capsys, "train", "--resume", str(tmp_path / "run"), "--no-progress")
    assert code == 0, err
    code, err = cli(capsys, *args, "--out", str(tmp_path / "whole"))
    assert metrics_rows(tmp_path / "run") == metrics_rows(tmp_path / "whole")


def test_a_program_too_large_for_memory_stops_before_any_file(tmp_path, capsys):
    out = tmp_path / "big"
    code, err = cli(capsys, "train", "--num-envs", "200000", "--total-timesteps", "100000000",
                    "--out", str(out), "--no-progress")
    one_line_error(code, err, "the training program needs")
    assert not out.exists()


@pytest.mark.parametrize("metrics", [None, "header"])
def test_plot_and_reproduce_without_metrics_are_one_line(finished_run, tmp_path, capsys,
                                                         metrics):
    run = copy_run(finished_run, tmp_path)
    if metrics is None:
        (run / "metrics.csv").unlink()
    else:
        lines = (run / "metrics.csv").read_text().splitlines()
        (run / "metrics.csv").write_text(lines[0] + "\n")
    for command in ("plot", "reproduce"):
        t = time.perf_counter()
        code, err = cli(capsys, command, str(run))
        one_line_error(code, err, "has no metrics to read")
        assert time.perf_counter() - t < 5  # refused before any training


def test_run_settings_are_written_and_read_as_one_object(finished_run):
    record = json.loads((finished_run / "config.json").read_text())
    assert record["format"] == runs.FORMAT
    settings = pgjax.experiment.Settings.of(record)
    assert settings == pgjax.experiment.Settings(seeds=2, seed=0, chunk_updates=1,
                                                 checkpoint_every=1).check(5)
    assert all(record[name] == (list(v) if isinstance(v, tuple) else v)
               for name, v in dataclasses.asdict(settings).items())


@pytest.mark.parametrize("edit, message", [
    ({"config": {"lr": 0.1}}, "config.json: its config was edited after the run was recorded "
     "(config_sha256 differs), so it is not what trained the run; train a new run with the "
     "changed config, or delete config_sha256 to use the run as edited"),
    # A record written before config_sha256: the changed state is what tells.
    ({"config": {"num_envs": 4}, "config_sha256": None}, "checkpoint 5 does not fit the state "
     "made from config.json (runner/env_state/time is stored as (2, 8), made as (2, 4)); was "
     "config.json changed after training?"),
    ({"seed": 7}, "config.json: its seed or seeds were edited after the run was recorded "
     "(seeds_sha256 differs), so it is not what trained the run; train a new run with the "
     "changed seed or seeds, or delete seeds_sha256 to use the run as edited"),
    ({"seeds": 3, "seeds_sha256": None}, "checkpoint 5 does not fit the state made from "
     "config.json"),
    ({"seeds": "two", "seeds_sha256": None}, "(seeds is 'two')"),
    ({"chunk_updates": 0}, "(chunk_updates is 0)"),
    ({"components": {"given": ["policy"]}}, "(components is {'given': ['policy']})"),
    ({"chunk_updates": 2}, "(chunk_updates is 2, which does not divide the 5 updates)"),
    ({"log": "wandb"}, "(log is 'wandb')"),
    ({"checkpoint_every": 0}, "(checkpoint_every is 0)"),
    ({"checkpoint_minutes": -1}, "(checkpoint_minutes is -1)"),
    ({"keep_checkpoints": 0}, "(keep_checkpoints is 0)"),
])
def test_an_edited_config_json_is_one_line_and_moves_nothing(finished_run, tmp_path, capsys,
                                                             edit, message):
    run = copy_run(finished_run, tmp_path)
    record = json.loads((run / "config.json").read_text())
    for key, value in edit.items():
        record[key] = {**record[key], **value} if key == "config" else value
        if value is None:
            del record[key]
    (run / "config.json").write_text(json.dumps(record))
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    for command in (["eval", str(run), "--episodes", "2"],
                    ["train", "--resume", str(run), "--no-progress"]):
        (run / "summary.json").unlink(missing_ok=True)
        code, err = cli(capsys, *command)
        one_line_error(code, err, message)
        assert "damaged" not in err and len(err.splitlines()) <= 2, err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before


def test_resume_deletes_the_metrics_jsonl_of_an_earlier_version(finished_run, tmp_path, capsys):
    """Earlier versions wrote metrics.jsonl beside metrics.csv; a resume, which cuts metrics.csv
    back and extends it, deletes it rather than leave it stale."""
    run = copy_run(finished_run, tmp_path)
    (run / "summary.json").unlink()
    (run / "metrics.jsonl").write_text('{"update": 1}\n')
    code, err = cli(capsys, "train", "--resume", str(run), "--no-progress")
    assert code == 0, err
    assert not (run / "metrics.jsonl").exists() and (run / "summary.json").is_file()


def test_a_damaged_summary_is_written_again_on_resume(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "wall_seconds": "fast"}))
    code, err = cli(capsys, "train", "--resume", str(run), "--no-progress")
    assert code == 0 and err == "", err
    assert json.loads((run / "summary.json").read_text())["final_return"] == \
        summary["final_return"]


def test_an_unfinished_run_reproduces_the_updates_it_recorded(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path)
    lines = (run / "metrics.csv").read_text().splitlines(keepends=True)
    (run / "metrics.csv").write_text("".join(lines[:4]))  # killed after update 3
    (run / "summary.json").unlink()
    main(["reproduce", str(run), "--no-progress"])  # exits 1 when it does not reproduce
    assert "match bitwise (the 3 updates it recorded of 5)" in capsys.readouterr().out


def test_reproduce_refuses_an_edited_config_in_one_line(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path)
    record = json.loads((run / "config.json").read_text())
    record["config"]["total_timesteps"] *= 2  # training it longer
    (run / "config.json").write_text(json.dumps(record, indent=2))
    t = time.perf_counter()
    code, err = cli(capsys, "reproduce", str(run))
    one_line_error(code, err, "config.json: its config was edited after the run was recorded")
    assert time.perf_counter() - t < 5  # refused before any training
    del record["config_sha256"]  # the way out the message names
    (run / "config.json").write_text(json.dumps(record, indent=2))
    code, err = cli(capsys, "train", "--resume", str(run), "--no-progress")
    assert code == 0 and err == "", err
    assert json.loads((run / "summary.json").read_text())["resumed_from_update"] == 5


def test_flags_that_resume_ignores_are_named(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path)
    code, err = cli(capsys, "train", "--resume", str(run), "--lr", "0.1", "--seeds", "3",
                    "--num-envs", "8", "--chunks", "2", "--no-progress")
    assert code == 0 and err == f"pgjax: {run} resumes as its config.json records it; ignoring " \
        "--lr, --seeds, --chunks", err  # --num-envs 8 is what the run has
    code, err = cli(capsys, "train", *TINY, "--resume", str(run), "--no-progress")
    assert code == 0 and "ignoring" not in err, err  # the command repeated with --resume
    code, err = cli(capsys, "train", "--resume", str(run), "--out", str(tmp_path / "other"),
                    "--overwrite", "--no-progress")
    assert code == 0 and err.endswith("ignoring --out, --overwrite"), err
    code, err = cli(capsys, "train", "--resume", str(run), "--no-normalize-advantages",
                    "--no-progress")
    assert code == 0 and err.endswith("ignoring --no-normalize-advantages"), err
    record = json.loads((run / "config.json").read_text())
    del record["checkpoint_every"]  # an older record: the flag sets the schedule, so it is used
    (run / "config.json").write_text(json.dumps(record))
    code, err = cli(capsys, "train", "--resume", str(run), "--checkpoint-every", "2",
                    "--no-progress")
    assert code == 0 and "ignoring" not in err, err


def test_settings_that_train_otherwise_than_they_read_are_named(tmp_path, capsys):
    code, err = cli(capsys, "train", *TINY, "--estimator", "gae", "--baseline", "none",
                    "--gamma-weighting", "--out", str(tmp_path / "run"), "--no-progress")
    assert code == 0 and err == "pgjax: estimator gae does not read --baseline, " \
        "--gamma-weighting, so they have no effect", err
    code, err = cli(capsys, "train", *TINY, "--estimator", "optimal-baseline", "--num-steps",
                    "500", "--total-timesteps", "8000", "--no-normalize-advantages", "--out",
                    str(tmp_path / "run"), "--overwrite", "--no-progress")
    assert code == 0 and err == "pgjax: estimator optimal-baseline does not read " \
        "--no-normalize-advantages, so it has no effect", err
    code, err = cli(capsys, "train", *TINY, "--estimator", "gae", "--gae-lambda", "0.9",
                    "--out", str(tmp_path / "run"), "--overwrite", "--no-progress")
    assert code == 0 and err == "", err
    code, err = cli(capsys, "train", *TINY, "--value-coef", "0.3", "--clip", "global",
                    "--conv-impl", "lax", "--out", str(tmp_path / "run"), "--overwrite",
                    "--no-progress")
    assert code == 0 and err.splitlines() == [
        "pgjax: --clip, --value-coef have no effect without a value net",
        "pgjax: --conv-impl has no effect without network cnn"], err
    code, err = cli(capsys, "train", *TINY, "--total-timesteps", "4500", "--out",
                    str(tmp_path / "run"), "--overwrite", "--no-progress")
    assert code == 0 and err == "pgjax: --total-timesteps 4500 trains 4000 env steps per seed " \
        "(5 updates of --num-envs 8 × --num-steps 100)", err


def test_first_line_of_a_library_error():
    assert pgjax.config.first_line(ValueError("short\nsecond line")) == "short"
    assert pgjax.config.first_line(OSError()) == "OSError"
    cut = pgjax.config.first_line(ValueError("word " * 50), 20)
    assert cut == "word word word word…" and len(cut) <= 20


def test_plot_without_runs_is_one_line(capsys):
    one_line_error(*cli(capsys, "plot"), "plot needs at least one run directory")


def test_eval_errors_are_one_line_and_touch_nothing(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path)
    code, err = cli(capsys, "eval", str(run), "--checkpoint", "2")
    one_line_error(code, err, "no checkpoint 2; available: 3, 4, 5")
    (run / "checkpoints" / "digests" / "3.sha256").write_text("0" * 64 + "\n")
    code, err = cli(capsys, "eval", str(run), "--checkpoint", "3")
    one_line_error(code, err, "checkpoint 3 is damaged (its arrays do not match the sha256 "
                   "written with them); the others: 4, 5")
    assert len(err.splitlines()) == 1, err
    code, err = cli(capsys, "eval", str(run), "--episodes", "0")
    one_line_error(code, err, "episodes must be a positive integer, got 0")
    code, err = cli(capsys, "eval", str(run), "--seed", "-1")
    one_line_error(code, err, "seed must be an integer in [0, 2**32), got -1")
    t = time.perf_counter()
    code, err = cli(capsys, "eval", str(run), "--gif", str(tmp_path / "episode.mp4"))
    one_line_error(code, err, "episode.mp4: the file name must end in .gif")
    assert time.perf_counter() - t < 5  # before any evaluation
    assert not (run / "eval.json").exists()
    shutil.rmtree(run / "checkpoints")
    code, err = cli(capsys, "eval", str(run))
    one_line_error(code, err, "has no checkpoints")
    assert not (run / "checkpoints").exists()


@pytest.mark.parametrize("edit, message", [
    ({"env": "CartPol-v1"}, "unknown env 'CartPol-v1'"),
    ({"colour": "red"}, "config.json: unknown config field 'colour'"),
    ({"num_envs": "eight"}, "config.json: num_envs must be an integer"),
])
def test_hand_edited_config_is_one_line(finished_run, tmp_path, capsys, edit, message):
    run = copy_run(finished_run, tmp_path)
    record = json.loads((run / "config.json").read_text())
    record["config"].update(edit)
    del record["config_sha256"]  # as written before it, else that is what an edit reports
    (run / "config.json").write_text(json.dumps(record))
    (run / "summary.json").unlink()
    for argv in (["eval", str(run)], ["train", "--resume", str(run), "--no-progress"]):
        code, err = cli(capsys, *argv)
        one_line_error(code, err, message)


@pytest.mark.parametrize("chunks", ["0", "-2"])
def test_non_positive_chunks_are_refused(chunks, capsys):
    code, err = cli(capsys, "train", *TINY, "--chunks", chunks)
    one_line_error(code, err, "chunks must be positive")


def test_resume_keeps_the_checkpoint_interval_and_a_finished_run_is_not_retrained(
        finished_run, tmp_path, capsys):
    record = json.loads((finished_run / "config.json").read_text())
    assert record["checkpoint_every"] == 1
    run = copy_run(finished_run, tmp_path)
    t = time.perf_counter()
    code, err = cli(capsys, "train", "--resume", str(run))
    assert code == 0 and "compiling" not in err, err
    assert time.perf_counter() - t < 5
    assert json.loads((run / "summary.json").read_text()) == \
        json.loads((finished_run / "summary.json").read_text())


def test_chunks_are_the_divisor_closest_to_the_request():
    from pgjax.experiment import chunk_length

    assert 64 // chunk_length(64, 20) == 16  # not 32
    assert chunk_length(64, 64) == 1 and chunk_length(7, 3) == 7 and chunk_length(12, 5) == 3
    # The default: about 20 chunks of at least 16 updates (or all updates in one).
    assert chunk_length(64) == 16 and chunk_length(1250) == 50 and chunk_length(7) == 7
    assert chunk_length(640) == 32 and chunk_length(17) == 17


def test_overwrite_keeps_the_old_run_until_the_new_one_compiled(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path)
    code, err = cli(capsys, "train", "--num-envs", "200000", "--total-timesteps", "100000000",
                    "--out", str(run), "--overwrite", "--no-progress")
    one_line_error(code, err, "the training program needs")
    assert metrics_rows(run) == metrics_rows(finished_run)


@pytest.mark.slow
@pytest.mark.usefixtures("uncached_subprocesses")
def test_ctrl_c_during_compile_exits_cleanly(tmp_path):
    """SIGINT at random moments of the compile: exit 130 and one line, never a crash. The
    process starts with SIGINT at its default, as a foreground one does (a suite run as a
    background job or in pytest-xdist's workers starts with it ignored, which a child
    inherits and pgjax leaves alone)."""
    rng = random.Random(0)
    for i in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-m", "pgjax.cli", "train", "--out", str(tmp_path / str(i))],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        first = proc.stderr.readline()
        assert "compiling" in first, first
        time.sleep(rng.uniform(0.0, 3.0))
        proc.send_signal(signal.SIGINT)
        err = proc.stderr.read()
        proc.wait(timeout=120)
        assert proc.returncode == 130, (proc.returncode, err)
        assert err.strip().splitlines()[-1] == "pgjax: interrupted", err
        assert not (tmp_path / str(i)).exists()


def test_a_failed_write_names_the_file_not_its_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "eval.json"

    def disk_full(f):
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError) as error:
        records.atomic_write(path, disk_full)
    assert (error.value.errno, error.value.filename) == (28, str(path))
    assert not list(tmp_path.iterdir())  # no temp file left

    def read_only(dir, prefix):
        raise PermissionError(13, "Permission denied", f"{dir}/{prefix}x1y2")

    def no_errno(f):  # as PIL's "cannot write mode RGBA as JPEG"
        raise OSError("cannot write mode RGBA as JPEG")

    with pytest.raises(OSError, match="^cannot write mode RGBA as JPEG$"):
        records.atomic_write(path, no_errno)
    monkeypatch.setattr(records.tempfile, "mkstemp", read_only)
    with pytest.raises(OSError) as error:
        runs.write_json(path, {})
    assert (error.value.errno, error.value.filename) == (13, str(path))


def test_an_env_that_cannot_download_its_data_is_one_line(monkeypatch, capsys):
    import urllib.error

    import gymnax

    def offline(name):
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setattr(gymnax, "make", offline)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--env", "MNISTBandit-bsuite", "--no-progress"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "pgjax: error: gymnax could not make MNISTBandit-bsuite, which downloads its data when "
        "first made ([Errno -2] Name or service not known)")


def test_resuming_a_finished_run_draws_a_missing_curve(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path)
    (run / "curve.png").unlink()
    csv_before = (run / "metrics.csv").read_bytes()
    code, err = cli(capsys, "train", "--resume", str(run), "--no-progress")
    assert code == 0 and (run / "curve.png").stat().st_size > 5000, err
    assert (run / "metrics.csv").read_bytes() == csv_before
    (run / "curve.png").unlink()  # a run reused by scripts/reproduce.py too
    config, _ = pgjax.experiment.load_run(run)
    assert pgjax.experiment.ensure_run(config, run, seeds=2)[0] == "reused"
    assert (run / "curve.png").stat().st_size > 5000


def run_files(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run directory (but its lock) and its bytes."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name != records.LOCK}


def test_a_second_writer_of_a_run_directory_is_refused_in_one_line(finished_run, tmp_path,
                                                                     capsys):
    """Two `train --resume RUN`, or two `train --out D`, at once: the lock the first holds
    (taken here, as that writer would) refuses the second in one line naming its holder, and
    the run keeps the first writer's bytes."""
    run = copy_run(finished_run, tmp_path)
    (run / "summary.json").unlink()  # unfinished: a resume would train
    shutil.rmtree(run / "checkpoints" / "5")
    before = run_files(run)
    holder = f"pgjax pid {os.getpid()} on {socket.gethostname()}"
    new = tmp_path / "new"
    new.mkdir()
    with records.DirLock(run).exclusive(), records.DirLock(new).exclusive():
        for argv in (["--resume", str(run)], [*TINY, "--out", str(run), "--overwrite"],
                     [*TINY, "--out", str(new)]):
            code, err = cli(capsys, "train", *argv, "--no-progress")
            one_line_error(code, err, f"is in use by {holder}; wait until it ends")
    assert run_files(run) == before
    assert not list(new.iterdir())  # nothing written; the lock's file goes with its holder
    code, err = cli(capsys, "train", "--resume", str(run), "--no-progress")  # released: resumes
    assert code == 0, err


@pytest.mark.parametrize("mine", ["checkpoints/my-notes.txt", "tensorboard/mine.txt",
                                  "checkpoints/5/notes.txt", "checkpoints/digests/notes.txt"])
def test_overwrite_refuses_a_run_holding_a_users_file_in_its_folders(finished_run, tmp_path,
                                                                       capsys, mine):
    run = copy_run(finished_run, tmp_path)
    (run / mine).parent.mkdir(exist_ok=True)
    (run / mine).write_text("mine")
    code, err = cli(capsys, "train", *TINY, "--out", str(run), "--overwrite", "--no-progress")
    one_line_error(code, err, f"holds a pgjax run and files it did not write ({mine})")
    assert (run / mine).read_text() == "mine"
    assert metrics_rows(run) == metrics_rows(finished_run)


def test_overwrite_never_deletes_through_a_symlink(finished_run, tmp_path, capsys):
    """A symlinked checkpoints/ is not pgjax's to delete: --overwrite refuses, and the folder it
    points to keeps every file."""
    run = copy_run(finished_run, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    (run / "checkpoints").rename(elsewhere)
    (run / "checkpoints").symlink_to(elsewhere)
    before = run_files(elsewhere)
    code, err = cli(capsys, "train", *TINY, "--out", str(run), "--overwrite", "--no-progress")
    one_line_error(code, err, "files it did not write (checkpoints)")
    assert run_files(elsewhere) == before
    (run / "summary.json").unlink()
    code, err = cli(capsys, "train", "--resume", str(run), "--no-progress")
    one_line_error(code, err, "checkpoints is not a directory but a symbolic link")
    assert run_files(elsewhere) == before


@pytest.mark.parametrize("command, edit, message", [
    ("reproduce", {"versions": "edited"}, "(versions is 'edited')"),
    ("reproduce", {"cpu": {"name": "mine"}}, "(cpu is {'name': 'mine'})"),
    ("eval", {"seed": 2**70, "seeds_sha256": None}, f"(seed is {2**70})"),
    ("eval", {"format": 3}, "(format is 3: this pgjax reads formats 1 to 2; a newer format"),
])
def test_edited_provenance_or_seed_is_one_line_before_any_work(finished_run, tmp_path, capsys,
                                                                command, edit, message):
    """reproduce retrained, then raised KeyError / TypeError; eval raised OverflowError."""
    run = copy_run(finished_run, tmp_path)
    record = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**record, **edit}))
    t = time.perf_counter()
    code, err = cli(capsys, command, str(run))
    one_line_error(code, err, message)
    assert time.perf_counter() - t < 5  # refused before any training


def test_plot_of_renamed_seed_columns_is_one_line(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path)
    header, rest = (run / "metrics.csv").read_text().split("\n", 1)
    (run / "metrics.csv").write_text(header.replace("return_seed", "ret_seed") + "\n" + rest)
    code, err = cli(capsys, "plot", str(run))
    one_line_error(code, err, "has no metrics to read (its per-seed columns are not "
                   "return_seed0, return_seed1, …)")


@pytest.mark.parametrize("resume", [False, True])
def test_two_writers_racing_for_one_run_directory(finished_run, tmp_path, resume):
    """Two `train --out D` (or two `--resume D`) at once, in two threads: one writes the run,
    the other is refused in one line (by the lock, or, when the first has ended, by the run it
    finds), and the run is the one a single writer makes."""
    config = pgjax.Config(num_envs=8, num_steps=100, total_timesteps=4000)
    out = tmp_path / "run"
    if resume:
        shutil.copytree(finished_run, out)
        (out / "summary.json").unlink()
        shutil.rmtree(out / "checkpoints" / "5")
    results = []

    def train():
        try:
            results.append(pgjax.train_run(None if resume else config, out, resume=resume,
                                           seeds=2, chunks=5, progress=False))
        except ValueError as e:
            results.append(e)

    threads = [threading.Thread(target=train) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    refused = [str(r) for r in results if isinstance(r, ValueError)]
    assert len(results) == 2 and (len(refused) == 1 or resume and not refused), results
    assert all("is in use by pgjax pid" in r or "already holds a pgjax run" in r
               for r in refused), refused
    assert metrics_rows(out) == metrics_rows(finished_run)


def test_a_checkpoint_renamed_to_a_later_update_is_damaged(finished_run, tmp_path, capsys):
    """Checkpoint 3 copied as checkpoint 4 (its digest too): resuming from it trained updates
    5 on with update 3's state, without a word. Its state's update counter says it is not 4."""
    run = copy_run(finished_run, tmp_path)
    (run / "summary.json").unlink()
    root = run / "checkpoints"
    for step in ("4", "5"):
        shutil.rmtree(root / step)
    shutil.copytree(root / "3", root / "4")
    shutil.copy(root / "digests" / "3.sha256", root / "digests" / "4.sha256")
    code, err = cli(capsys, "train", "--resume", str(run), "--no-progress")
    assert code == 0, err
    assert "checkpoint 4 is damaged (it holds the state after update 3, not 4)" in err
    assert metrics_rows(run) == metrics_rows(finished_run)
