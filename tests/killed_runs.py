"""A training process killed with SIGKILL once its first checkpoint is committed."""

import subprocess
import time
from pathlib import Path


def kill_after_first_checkpoint(argv: list[str], run_dir: Path, timeout: float = 240) -> None:
    """Start `argv`, SIGKILL it as soon as `run_dir` holds a committed checkpoint, and check
    that it had not finished (no summary.json).

    orbax writes commit_success.txt into the temporary folder (`<step>.orbax-checkpoint-tmp-*`)
    and then renames it to `<step>`: only a folder named by its step alone is committed.
    """
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    try:
        while not committed(run_dir / "checkpoints"):
            assert proc.poll() is None and time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.005)
    finally:
        proc.kill()
        proc.wait()
    assert not (run_dir / "summary.json").exists()


def committed(checkpoints: Path) -> list[Path]:
    return [p for p in checkpoints.glob("*/commit_success.txt") if p.parent.name.isdigit()]
