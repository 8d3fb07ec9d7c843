"""Sweeps over independent workers (`pgjax.sweep.launch`, `pgjax.sweep.claims`): real worker
processes through submitit's local executor, a worker SIGKILLed mid-chunk, a node lost with its
claim, merge and status, the SLURM submission (a fake sbatch), and the removed jax.distributed
flags.

Every sweep here compiles the same program once: the reference sweep (one process, the CLI in a
subprocess) fills a persistent compilation cache the workers then load from, so three workers do
not compile three times on two cores. Loading a compiled program changes no bits.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sweep_chunks import chunk_metrics

from pgjax.cli import main
from pgjax.sweep.claims import claim_path
from pgjax.sweep.launch import _environs, _stop_local, merge_job, run_local
from pgjax.sweep.spec import SpecError, parse_spec

SPEC = """\
env: CartPole-v1
num_envs: 8
num_steps: 50
total_timesteps: 100000
hidden: [16]
grid:
  lr: [0.01, 0.03, 0.001]
seeds: 4
chunk_runs: 2
"""  # 12 runs in 6 chunks of 2, one program; a chunk trains for about half a second
CHUNKS = 6
RUN_ONLY = ("worker", "wall_seconds")  # columns that depend on where and how fast a run ran
LEASE = 2.0


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "tiny.yaml"
    path.write_text(SPEC)
    return path


@pytest.fixture(scope="module")
def reference(spec, tmp_path_factory):
    """A one-process sweep (`pgjax sweep SPEC`); its compiled program goes to the suite's
    compilation cache (tests/conftest.py), which the workers of every test here load it from."""
    root = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("JAX_PLATFORMS", "cpu")
        proc = subprocess.run([sys.executable, "-m", "pgjax.cli", "sweep", str(spec), "--out",
                               str(root / "out"), "--no-progress"],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        yield root / "out"


def records(out: Path) -> dict[int, dict]:
    return {int(p.stem.split("-")[1]): json.loads(p.read_text())
            for p in (out / "chunks").glob("chunk-*.json")}


def recorded_lines(out: Path) -> Counter:
    """chunk -> how many times a worker's log says it recorded it."""
    counts = Counter()
    for log in (out / "logs").glob("*_log.out"):
        for line in log.read_text().splitlines():
            if "] chunk " in line and " recorded:" in line:
                counts[int(line.split("] chunk ")[1].split()[0])] += 1
    return counts


def assert_same_as_reference(out: Path, reference: Path) -> None:
    """Every run's metrics bitwise, and the table but for who ran it and how fast."""
    ours, theirs = chunk_metrics(out), chunk_metrics(reference)
    assert sorted(ours) == sorted(theirs) == list(range(12))
    for run in theirs:
        for name, x in theirs[run].items():
            np.testing.assert_array_equal(ours[run][name], x, err_msg=f"run {run} {name}")
    a = pd.read_csv(out / "results.csv").drop(columns=list(RUN_ONLY))
    b = pd.read_csv(reference / "results.csv").drop(columns=list(RUN_ONLY))
    pd.testing.assert_frame_equal(a, b)


def kill_a_worker_mid_chunk(chunks: Path, stop: threading.Event, killed: dict) -> None:
    """SIGKILL the first worker seen holding a claim after it recorded a chunk (so its program is
    compiled and the claimed chunk is training). The worker is stopped first and killed only if
    it still holds the claim and the chunk is unrecorded; else it is let go and we look again."""
    while not stop.is_set():
        done = {p.name: json.loads(p.read_text())["worker"] for p in chunks.glob("chunk-*.json")}
        for path in chunks.glob("chunk-*.claim-*"):
            try:
                held = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if held["worker"] not in done.values():
                continue
            os.kill(held["pid"], signal.SIGSTOP)
            record = chunks / (path.name.split(".")[0] + ".json")
            if path.exists() and not record.exists():
                os.kill(held["pid"], signal.SIGKILL)
                killed.update(held, chunk=int(path.name.split(".")[0].split("-")[1]))
                return
            os.kill(held["pid"], signal.SIGCONT)
        time.sleep(0.02)


def test_three_workers_one_killed_mid_chunk_match_one_process(spec, reference, tmp_path, capsys):
    out, killed, stop = tmp_path / "sweep", {}, threading.Event()
    killer = threading.Thread(target=kill_a_worker_mid_chunk, args=(out / "chunks", stop, killed))
    killer.start()
    try:
        table = run_local(spec, out, array_size=3, lease_seconds=LEASE)
    finally:
        stop.set()
        killer.join()
    assert killed, "no worker was caught holding a claim after recording a chunk"
    assert_same_as_reference(out, reference)
    assert len(table) == 12 and len({*table["worker"]}) >= 2
    held = records(out)
    assert sorted(held) == list(range(CHUNKS))
    # the chunk the dead worker held was trained again, by another worker, as attempt 2
    again = held[killed["chunk"]]
    assert again["attempt"] == 2 and again["worker"] != killed["worker"]
    assert all(r["attempt"] == 1 for c, r in held.items() if c != killed["chunk"])
    assert recorded_lines(out) == Counter(range(CHUNKS))  # no chunk recorded twice
    assert not list((out / "chunks").glob("*claim*"))
    assert not list((out / "chunks").glob(".*"))
    err = capsys.readouterr().err
    assert err.count("killed or lost") == 1 and "the other workers trained its chunks" in err


def test_a_lost_nodes_chunk_is_taken_over_after_its_lease(spec, reference, tmp_path):
    """Chunk 0 is held by a worker on another host (no pid to check there): while its heartbeat
    goes on, the one worker here trains the rest and waits; once the heartbeat stops, the chunk
    is taken over when the lease runs out, not before."""
    out = tmp_path / "sweep"
    (out / "chunks").mkdir(parents=True)
    forged = claim_path(out / "chunks", "chunk-000000", 1)
    lost = {"worker": "job 77_0", "host": "node-9", "machine": "node-9/boot", "pid": 4242,
            "claimed": time.time(), "lease_seconds": LEASE}
    stop, last = threading.Event(), {}

    def heartbeat():  # node-9 renews its claim until the worker here has recorded the rest
        while not stop.is_set():
            last["expires"] = time.time() + LEASE
            tmp = forged.with_name(".forged")
            tmp.write_text(json.dumps({**lost, "renewed": time.time(), **last}))
            os.replace(tmp, forged)
            if len(list((out / "chunks").glob("chunk-*.json"))) == CHUNKS - 1:
                stop.set()  # the node is lost now
            time.sleep(LEASE / 4)

    beating = threading.Thread(target=heartbeat)
    beating.start()
    try:
        run_local(spec, out, array_size=1, lease_seconds=LEASE)
    finally:
        stop.set()
        beating.join()
    held = records(out)
    assert held[0]["attempt"] == 2 and held[0]["started"] >= last["expires"]
    assert all(held[c]["attempt"] == 1 and held[c]["started"] < last["expires"]
               for c in range(1, CHUNKS))
    (log,) = (out / "logs").glob("*_log.out")
    assert "standby: waiting for chunks 0 held by other workers" in log.read_text()
    assert_same_as_reference(out, reference)
    assert not list((out / "chunks").glob("*claim*"))


def test_merge_refuses_an_incomplete_sweep_until_a_worker_completes_it(spec, reference, tmp_path,
                                                                       capsys):
    out = tmp_path / "sweep"
    shutil.copytree(reference, out)
    for c in (2, 4, 5):
        for suffix in (".json", ".npz"):
            (out / "chunks" / f"chunk-{c:06d}{suffix}").unlink()
    (out / "results.csv").unlink()
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", str(spec), "--out", str(out), "--merge"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("pgjax: error:"), err
    assert "3 of 6 chunks not recorded (chunks 2, 4-5)" in err, err
    assert not (out / "results.csv").exists()

    claim_path(out / "chunks", "chunk-000002", 1).write_text(json.dumps(
        {"worker": "job 5_1", "host": "node-3", "expires": time.time() + 30}))
    main(["sweep", str(spec), "--out", str(out), "--status"])
    status = capsys.readouterr().out.splitlines()
    assert status[0].startswith("3 of 6 chunks recorded (6 of 12 runs)")
    assert status[1].startswith("chunk 2: job 5_1 on node-3, attempt 1, lease ")
    assert status[2] == "not started: chunks 4-5"

    with pytest.raises(SystemExit):
        main(["sweep", str(spec), "--out", str(tmp_path / "none"), "--merge"])
    assert "holds no sweep" in capsys.readouterr().err

    # what a task of a plain job array runs (scripts/slurm_sweep.sbatch), then the merge
    claim_path(out / "chunks", "chunk-000002", 1).unlink()
    proc = subprocess.run([sys.executable, "-m", "pgjax.cli", "sweep", str(spec), "--out",
                           str(out), "--worker"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.rstrip().endswith("done: recorded chunks 2, 4-5"), proc.stdout
    main(["sweep", str(spec), "--out", str(out), "--merge"])
    assert "3 configs; results in" in capsys.readouterr().out
    assert_same_as_reference(out, reference)
    assert merge_job(parse_spec(spec), str(out)).endswith(f"3 configs; results in {out}")


FAKE_SBATCH = """#!/usr/bin/env bash
n=$(( $(cat "$0.count" 2>/dev/null || echo 0) + 1 ))
echo $n > "$0.count"
cp "$1" "$0.$n"
echo "Submitted batch job $(( 4241 + n ))"
"""


def fake_slurm(tmp_path, monkeypatch) -> Path:
    """sbatch (FAKE_SBATCH) and a failing srun first on PATH; returns their folder."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def test_slurm_launcher_submits_an_array_and_a_merge_after_it(spec, tmp_path, monkeypatch,
                                                              capsys):
    bin_dir = fake_slurm(tmp_path, monkeypatch)
    out = tmp_path / "sweep"
    main(["sweep", str(spec), "--out", str(out), "--launcher", "slurm", "--array-size", "3",
          "--partition", "gpu", "--gpus-per-task", "1", "--time", "30"])
    printed = capsys.readouterr().out
    assert "submitted job array 4242 (3 workers for 6 of 6 chunks) and merge job 4243" in printed
    assert f"pgjax sweep {spec} --out {out} --status" in printed
    array, merge = (bin_dir / "sbatch.1").read_text(), (bin_dir / "sbatch.2").read_text()
    for line in ("--array=0-2%3", "--partition=gpu", "--gpus-per-node=1", "--time=30",
                 "--job-name=pgjax-sweep"):
        assert f"#SBATCH {line}\n" in array, array
    assert "#SBATCH --dependency=afterany:4242\n" in merge and "--array" not in merge, merge
    assert "--gpus" not in merge
    assert len(list((out / "logs").glob("4242_*_submitted.pkl"))) == 3
    assert (out / "sweep.json").exists() and not list((out / "chunks").iterdir())


def test_sweep_names_settings_that_train_otherwise_than_they_read(tmp_path, monkeypatch,
                                                                 capsys):
    fake_slurm(tmp_path, monkeypatch)
    spec = tmp_path / "gae.yaml"
    spec.write_text(SPEC.replace("total_timesteps: 100000",
                                 "total_timesteps: 100100\nestimator: gae\nbaseline: none"))
    main(["sweep", str(spec), "--out", str(tmp_path / "sweep"), "--launcher", "slurm"])
    assert capsys.readouterr().err.splitlines() == [
        "pgjax: total_timesteps 100100 trains 100000 env steps per seed (250 updates of "
        "num_envs 8 × num_steps 50)",
        "pgjax: estimator gae does not read baseline, so it has no effect",
    ]


def test_slurm_launcher_submits_a_damaged_chunk_again(spec, reference, tmp_path, monkeypatch,
                                                      capsys):
    fake_slurm(tmp_path, monkeypatch)
    out = tmp_path / "sweep"
    shutil.copytree(reference, out)
    record = out / "chunks" / "chunk-000003.json"
    record.write_text(record.read_text()[:50])
    main(["sweep", str(spec), "--out", str(out), "--launcher", "slurm", "--array-size", "3"])
    assert "(1 worker for 1 of 6 chunks)" in capsys.readouterr().out


def test_local_workers_get_their_own_gpus(monkeypatch):
    """--launcher local --gpus-per-task G: worker k sees GPUs k·G ... of those visible here (no GPU
    is needed to check the assignment; submitit's local executor would give each all of them)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,4,5,6,7")
    assert _environs("local", 6, None, 2) == [{"CUDA_VISIBLE_DEVICES": "3,4"},
                                               {"CUDA_VISIBLE_DEVICES": "5,6"}]
    assert _environs("local", 1, None, 1) == [{"CUDA_VISIBLE_DEVICES": "3"}]  # one chunk left
    assert _environs("local", 6, 2, None) == [{"CUDA_VISIBLE_DEVICES": "3,4,5,6,7"}] * 2
    with pytest.raises(SpecError, match="3 workers × --gpus-per-task 2 needs 6 GPUs; 5 visible"):
        _environs("local", 6, 3, 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert _environs("local", 6, None, None) == [{"CUDA_VISIBLE_DEVICES": None}]  # unset: all
    assert _environs("slurm", 6, None, 1) == [{}] * 6  # SLURM sets it for each task


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--distributed"], "Unrecognized options: --distributed"),
        (["--coordinator-address", "h:1", "--num-processes", "2", "--process-id", "0"],
         "Unrecognized options: --coordinator-address"),
        (["--array-size", "4"], "--array-size need --launcher"),
        (["--merge", "--status"], "choose one of --launcher, --worker, --merge and --status"),
        (["--launcher", "local", "--array-size", "0"], "--array-size must be positive"),
        (["--lease-seconds", "0"], "--lease-seconds must be positive and under 1e+09, got 0.0"),
        (["--worker", "--lease-seconds", "-1"],
         "--lease-seconds must be positive and under 1e+09, got -1.0"),
        (["--lease-seconds", "inf"], "--lease-seconds must be positive and under 1e+09, got inf"),
        (["--launcher", "slurm"], "--launcher slurm needs sbatch on PATH"),
    ],
)
def test_cluster_flags_fail_in_one_line(spec, tmp_path, capsys, monkeypatch, argv, message):
    path = [d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "sbatch").exists()]
    monkeypatch.setenv("PATH", os.pathsep.join(path))  # no sbatch
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", str(spec), "--out", str(tmp_path / "out"), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("pgjax: error:"), err
    assert message in err, err
    assert not (tmp_path / "out").exists()


def test_an_interrupted_launcher_stops_its_local_workers():
    """submitit's local controller runs the worker as its child; the launcher kills that child
    (a worker ignores SIGTERM), and the controller then ends on its own."""

    class Job:  # the part of submitit's LocalJob that `_stop_local` uses
        def __init__(self):
            self._process = subprocess.Popen(["bash", "-c", "sleep 300 & wait $!"])

        def cancel(self, check=True):
            raise AssertionError("the worker should have been killed, not the controller")

    job = Job()
    deadline = time.time() + 10
    children = Path(f"/proc/{job._process.pid}/task/{job._process.pid}/children")
    while not children.read_text().split():
        assert time.time() < deadline
        time.sleep(0.01)
    _stop_local(job)
    assert job._process.wait(timeout=10) == 128 + signal.SIGKILL  # bash reports its child
