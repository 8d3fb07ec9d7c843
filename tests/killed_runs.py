"""A training process killed with SIGKILL once its first checkpoint is committed."""

import subprocess
import time
from pathlib import Path


def kill_after_first_checkpoint(argv: list[str], run_dir: Path, timeout: float = 240) -> None:
    """Start `argv`, SIGKILL it as soon as `run_dir` holds a committed checkpoint, and check
    that it had not finished (no summary.json)."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    try:
        while not list((run_dir / "checkpoints").glob("[0-9]*/commit_success.txt")):
            assert proc.poll() is None and time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.005)
    finally:
        proc.kill()
        proc.wait()
    assert not (run_dir / "summary.json").exists()
