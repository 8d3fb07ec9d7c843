"""Stopping on a signal, the one way every long-running pgjax process does it. Host-only.

A first SIGTERM (a scheduler's notice of preemption) or Ctrl-C is a request: the run or sweep
stops at its next safe point (a chunk's rows and checkpoint written; a sweep's chunk recorded or
dropped) and raises `Stopped`, which the CLI turns into one line and the signal's exit status.
A second one acts at once. The start-up (compiling) is covered too: a signal there stops the
process before it writes anything.
"""

import contextlib
import os
import signal
import threading
from pathlib import Path

import jax

SIGNALS = (signal.SIGTERM, signal.SIGINT)
SWEEP_RESUME = "the chunks recorded are kept, and the same command resumes the sweep"


class Stopped(Exception):
    """A run or sweep stopped by a signal (SIGTERM, Ctrl-C) at a safe point.

    `update`: a run's last update whose rows and checkpoint are written (`resume_run(run_dir)`
    continues it); None: before a run wrote anything, or a sweep (whose recorded chunks are
    kept: the same command resumes it). `exit_status` is 128 + the signal,
    as the signal's own ending would have it.
    """

    def __init__(self, signum: int, update: int | None = None, where: Path | None = None, *,
                 resume: str = ""):
        self.signal, self.update, self.run_dir = signum, update, where
        self.exit_status = 128 + signum
        name = signal.Signals(signum).name
        if update is None:
            text = f"stopped by {name}" + (f": {resume}" if resume else
                                           " before training started; nothing was written")
        else:
            saved = "; its checkpoint is saved" if update else ""
            text = (f"stopped by {name} at update {update}{saved}: resume with pgjax train "
                    f"--resume {where}")
        super().__init__(text)


def _default(handler) -> bool:
    """Whether a signal's handler is the one Python starts with, so pgjax may take it over:
    not ignored (a background job, `nohup`) and not set by the program around pgjax (e.g.
    submitit's, in a cluster job), whose choice stands."""
    return handler in (signal.SIG_DFL, signal.default_int_handler)


@contextlib.contextmanager
def stop_requests(what: str = "once the last chunk written is checkpointed"):
    """A list that a first SIGTERM or Ctrl-C appends its signal to, for the caller to stop at
    its next safe point (`what`, said on stderr); a second one acts as without this: Ctrl-C
    raises KeyboardInterrupt, SIGTERM ends the process. Only signals whose handler is the
    default one are taken, and only from the main thread (elsewhere the list stays empty); the
    handlers before are put back on exit."""
    requested: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return

    def handler(signum, frame):
        if requested:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        requested.append(signum)
        # os.write, not print: the handler may run while the main thread writes to stderr.
        os.write(2, f"pgjax: {signal.Signals(signum).name}: stopping {what} (again: stop "
                    f"now)\n".encode())

    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s, h in previous.items():
        if _default(h):
            signal.signal(s, handler)
    try:
        yield requested
    finally:
        for s, h in previous.items():
            if _default(h):
                signal.signal(s, h)


def computed(tree, requested) -> bool:
    """Wait until the arrays of `tree` are computed: True; False once `requested` holds a
    signal (looked at every 0.2 s). The wait is on a thread: the main thread waits on a lock,
    during which signal handlers run at once (inside XLA they would wait for the computation).
    The thread is no daemon, so a process that ends while a dropped computation runs waits for
    it rather than ending the thread inside XLA."""
    if all(x.is_ready() for x in jax.tree.leaves(tree)):  # no thread needed
        return True
    done = threading.Event()

    def wait():
        try:
            jax.block_until_ready(tree)
        except Exception:  # raised again where the caller reads the arrays
            pass
        finally:
            done.set()

    threading.Thread(target=wait).start()
    while not done.wait(0.2):
        if requested:
            return False
    return True
