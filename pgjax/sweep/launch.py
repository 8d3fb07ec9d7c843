"""A sweep's workers on a scheduler: a SLURM job array, or processes on this machine (submitit).

Every array task (or local process) is one `pgjax.sweep.work` worker, built from the spec alone
(components cannot be sent to another process); on SLURM a merge job starts after the array
(`afterany`), locally this process waits and merges. `Worker` is `Checkpointable`: a task that
SLURM times out or preempts is requeued and carries on. submitit passes each worker its call,
and the launcher its result, as pickles in `out_dir/logs/`, and unpickling runs code: a sweep's
`--out` must be a folder that only users you trust can write.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal, NamedTuple

import submitit

from pgjax.components import describe_given
from pgjax.sweep import LEASE_SECONDS, IncompleteSweep, merge_sweep, work
from pgjax.sweep.claims import scan
from pgjax.sweep.files import load_records, prepare_out_dir, span, sweep_id
from pgjax.sweep.report import format_sweep
from pgjax.sweep.spec import Plan, Spec, SpecError, planned

LOCAL_TIMEOUT_MINUTES = 7 * 24 * 60
SLURM_TIME_MINUTES = 120
DEFAULT_ARRAY_SIZE = 8


class Submitted(NamedTuple):
    """What `submit` started."""

    jobs: list  # submitit jobs, one per worker (none when every chunk is recorded)
    merge: Any  # the merge job (SLURM), else None
    chunks: int  # chunks in the sweep
    left: list[int]  # chunk indices not recorded at submission
    logs: Path

    def describe(self, spec: "str | os.PathLike", out_dir: "str | os.PathLike") -> str:
        """What was submitted, and how to watch it."""
        array = self.jobs[0].job_id.split("_")[0]
        merge = f" and merge job {self.merge.job_id} after it" if self.merge else ""
        workers = f"{len(self.jobs)} worker{'s' * (len(self.jobs) != 1)}"
        return (f"submitted job array {array} ({workers} for {len(self.left)} of "
                f"{self.chunks} chunks){merge}; logs in {self.logs}\n"
                f"progress: pgjax sweep {spec} --out {out_dir} --status")


class Worker(submitit.helpers.Checkpointable):
    """One array task: `run_worker` of the sweep's spec, after setting `environ`'s variables
    (None: unset) before JAX starts, e.g. the local GPUs it may use."""

    def __init__(self, spec: Spec, out_dir: str, lease_seconds: float):
        self.spec, self.out_dir, self.lease_seconds = spec, out_dir, lease_seconds

    def __call__(self, index: int, environ: dict) -> list[int]:
        for name, value in environ.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        return run_worker(self.spec, self.out_dir, lease_seconds=self.lease_seconds,
                          name=f"job {submitit.JobEnvironment().job_id}")


def run_worker(
    spec: "Plan | Spec | str | os.PathLike | dict",
    out_dir: "str | os.PathLike",
    *,
    lease_seconds: float = LEASE_SECONDS,
    name: str | None = None,
) -> list[int]:
    """One worker of a sweep in this process (`pgjax sweep SPEC --worker`, and every array
    task): claim, train and record chunks, no merge; a line printed per chunk recorded or taken
    over. `name`: the worker's in claims, records and rows (default: the SLURM job and array
    task, else "host:pid"). Returns the chunks it recorded; SpecError before any training."""
    plan = planned(spec)
    out_dir = Path(out_dir)
    name = name or _slurm_name()

    def log(line: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} [{name or 'worker'}] {line}", flush=True)

    with prepare_out_dir(out_dir, plan.spec):
        ran = work(out_dir, plan, {}, worker=name, lease_seconds=lease_seconds,
                   exit_when_idle=True, log=log, poll_seconds=min(5.0, lease_seconds / 4))
    log(f"done: recorded chunks {span(sorted(ran)) or 'none'}")
    return ran


def _slurm_name() -> str | None:
    """'job A_a' in a SLURM array task, 'job J' in another SLURM job, else None."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"job {array}_{task}"
    job = os.environ.get("SLURM_JOB_ID")
    return f"job {job}" if job else None


def merge_job(spec: Spec, out_dir: str) -> str:
    """The merge step of a SLURM sweep: write the table, print and return the ranking."""
    import jax

    jax.config.update("jax_platforms", "cpu")  # a job without GPUs, whatever jaxlib is installed
    merge_sweep(spec, out_dir)
    text = format_sweep(Path(out_dir))
    print(text, flush=True)
    return text


def submit(
    spec: "Plan | str | os.PathLike | dict",
    out_dir: "str | os.PathLike",
    *,
    cluster: Literal["local", "slurm"],
    array_size: int | None = None,
    partition: str | None = None,
    gpus_per_task: int | None = None,
    cpus_per_task: int | None = None,
    time_minutes: int | None = None,
    lease_seconds: float = LEASE_SECONDS,
) -> Submitted:
    """Check the sweep, then start its workers (and on SLURM its merge job); SpecError, before
    anything is submitted, for a bad spec, out_dir or option.

    `cluster`: "slurm" (a job array; `sbatch` must be on PATH) or "local" (processes here);
    `out_dir` must be on a filesystem every worker sees. `array_size`: workers (default: SLURM
    8, local one per `gpus_per_task` GPUs or 1; never more than the chunks left).
    `gpus_per_task`: local worker k sees GPUs k·G ... k·G + G − 1 of those visible here
    (default: all of them). `time_minutes`: each worker's limit (default: SLURM 120, local 7
    days). `partition`, `cpus_per_task`: SLURM's.
    """
    _check_options(array_size=array_size, gpus_per_task=gpus_per_task,
                   cpus_per_task=cpus_per_task, time_minutes=time_minutes,
                   lease_seconds=lease_seconds)
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise SpecError("--launcher slurm needs sbatch on PATH (run it on a SLURM login node); "
                        "--launcher local runs the workers on this machine")
    plan = planned(spec)
    out_dir = Path(out_dir).absolute()
    prepare_out_dir(out_dir, plan.spec).close()  # its workers check sweep.json again
    # a damaged chunk is left: a worker trains it again
    left = load_records(out_dir, plan, sweep_id(plan.spec.to_json(), describe_given({})))[1]
    logs = out_dir / "logs"
    if not left:
        return Submitted([], None, len(plan.chunks), left, logs)
    environs = _environs(cluster, len(left), array_size, gpus_per_task)
    slurm = {"slurm_partition": partition} if partition else {}
    executor = _executor(cluster, logs, name="pgjax-sweep", **slurm,
                         timeout_min=time_minutes or (SLURM_TIME_MINUTES if cluster == "slurm"
                                                      else LOCAL_TIMEOUT_MINUTES),
                         **({"gpus_per_node": gpus_per_task}
                            if gpus_per_task and cluster == "slurm" else {}),
                         **({"cpus_per_task": cpus_per_task} if cpus_per_task else {}))
    jobs = executor.map_array(Worker(plan.spec, str(out_dir), lease_seconds),
                              range(len(environs)), environs)
    merge = None
    if cluster == "slurm":
        after = f"afterany:{jobs[0].job_id.split('_')[0]}"
        merge = _executor(cluster, logs, name="pgjax-sweep-merge", timeout_min=30,
                          cpus_per_task=2, slurm_dependency=after,
                          **slurm).submit(merge_job, plan.spec, str(out_dir))
    return Submitted(jobs, merge, len(plan.chunks), left, logs)


def _executor(cluster: str, logs: Path, **parameters) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=logs, cluster=cluster)
    executor.update_parameters(**parameters)
    return executor


def run_local(
    spec: "Plan | str | os.PathLike | dict",
    out_dir: "str | os.PathLike",
    *,
    progress: bool = False,
    **options,
):
    """`submit(cluster="local", **options)`, wait for the workers, merge: the results table. A
    worker that ended early is reported on stderr (one line each); IncompleteSweep where every
    worker ended and chunks are still missing (named in its one line)."""
    from tqdm.auto import tqdm

    plan = planned(spec)
    submitted = submit(plan, out_dir, cluster="local", **options)
    chunks_dir = Path(out_dir) / "chunks"
    try:
        with tqdm(total=submitted.chunks, unit="chunk", desc="sweep", disable=not progress,
                  dynamic_ncols=True) as bar:
            while not all(job.done() for job in submitted.jobs):
                bar.update(len(scan(chunks_dir).recorded) - bar.n)
                time.sleep(0.5)
            bar.update(len(scan(chunks_dir).recorded) - bar.n)
    except KeyboardInterrupt:  # the workers stop with the launcher (their chunks: rerun)
        for job in submitted.jobs:
            _stop_local(job)
        raise
    ended = [f"worker {i} ({how}; log {job.paths.stdout})"
             for i, job in enumerate(submitted.jobs) if (how := _ending(job))]
    try:
        table = merge_sweep(plan, out_dir)
    except IncompleteSweep as e:
        raise IncompleteSweep(f"{e}; ended early: {', '.join(ended) or 'none'}") from None
    for line in ended:
        print(f"pgjax: {line}; the other workers trained its chunks", file=sys.stderr)
    return table


def _stop_local(job) -> None:
    """SIGKILL to the processes submitit's controller runs (they ignore SIGTERM; the controller
    prints a traceback on SIGINT), else `job.cancel`: a killed worker's claims are dead at once."""
    process = getattr(job, "_process", None)
    if process is None or process.poll() is not None:
        return
    try:
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    except OSError:
        children = []
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    if not children:
        job.cancel(check=False)


def _ending(job) -> str:
    """'' for a worker that returned, else how it ended."""
    if not job.paths.result_pickle.exists():
        return "killed or lost"
    error = job.exception()
    if error is None:
        return ""
    lines = [line for line in str(error).split("----------------------")[1].splitlines() if line]
    return f"failed: {lines[-1].strip()[:200]}" if lines else "failed"


def _check_options(**options) -> None:
    for name, value in options.items():
        if value is not None and not value > 0:
            flag = "--" + name.replace("_", "-").replace("-minutes", "")
            raise SpecError(f"{flag} must be positive, got {value}")


def _environs(cluster: str, left: int, array_size: int | None,
              gpus_per_task: int | None) -> list[dict]:
    """Per worker, the variables it sets before JAX starts; their number is the array size."""
    if cluster == "slurm":
        return [{}] * min(left, array_size or DEFAULT_ARRAY_SIZE)
    here = os.environ.get("CUDA_VISIBLE_DEVICES")  # submitit's local executor overrides it
    if not gpus_per_task:
        return [{"CUDA_VISIBLE_DEVICES": here}] * min(left, array_size or 1)
    gpus = _visible_gpus(here)
    n = min(left, array_size or max(1, len(gpus) // gpus_per_task))
    if n * gpus_per_task > len(gpus):
        raise SpecError(f"{n} workers × --gpus-per-task {gpus_per_task} needs "
                        f"{n * gpus_per_task} GPUs; {len(gpus)} visible here")
    return [{"CUDA_VISIBLE_DEVICES": ",".join(gpus[k * gpus_per_task:(k + 1) * gpus_per_task])}
            for k in range(n)]


def _visible_gpus(here: str | None) -> list[str]:
    """The GPU ids this process may use: CUDA_VISIBLE_DEVICES, else those nvidia-smi lists."""
    if here is not None:
        return [g for g in here.split(",") if g.strip()]
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(listed.stdout.splitlines()) if line.startswith("GPU")]
