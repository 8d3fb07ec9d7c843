"""The record layer under run and sweep directories, host-only: every file pgjax writes goes
through `atomic_write` or `create_new`, every digest is `digest`, a process that writes a
directory holds its `DirLock`, pgjax deletes only entries it names (`foreign` tells a
user's apart) through `remove`, and a damaged record is moved aside by `set_aside`."""

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LOCK = ".lock"  # DIR/.lock: the lock file of a run or sweep directory, naming its holder


def atomic_write(path: Path, write, mode: str = "w") -> None:
    """Write through `write(file)` to a temp file in the same folder, then rename over `path`.

    A killed process leaves either the old file or the new one, never half of it. An OSError
    (read-only folder, full disk) names `path`, not the temp file.
    """
    tmp = _write_temp(path, write, mode)
    try:
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(path)) from None


def create_new(path: Path, write, mode: str = "w") -> bool:
    """Write through `write(file)` to a temp file, then give it the name `path` unless that name
    exists: whether it did. Of several processes (on any hosts sharing the folder) creating one
    name, exactly one does, and it is never seen half written.

    `os.link` is atomic on local filesystems and NFS alike; on NFS a retried link can report
    EEXIST though it succeeded, which the link count of the temp file tells apart.
    """
    tmp = _write_temp(path, write, mode)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return os.stat(tmp).st_nlink == 2
    finally:
        os.unlink(tmp)
    return True


def _write_temp(path: Path, write, mode: str) -> str:
    """A temp file `.NAME.*` beside `path` holding what `write(file)` wrote; an OSError names
    `path`, and a failed write leaves no temp file."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from None
    os.fchmod(fd, 0o644)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"newline": ""})) as f:
            write(f)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno is not None and e.filename in (None, tmp):
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise
    return tmp


def digest(value=None, arrays=(), *, separators=(",", ":")) -> str:
    """sha256 of `value` as JSON (keys sorted; other types by `str`), then of each `(name,
    array)` of `arrays`: "NAME:DTYPE:SHAPE;" and its bytes.

    The one digest of pgjax's records: config.json's `config_sha256` (its config) and
    `seeds_sha256` (its seed and seeds), a sweep's id (`sweep.files.sweep_id`, with json.dumps'
    default `separators`), and a checkpoint's (its arrays and the update its state holds: the
    checkpoint's name for a state without an update counter, which then fails its digest when
    renamed).
    """
    h = hashlib.sha256()
    if value is not None:
        h.update(json.dumps(value, sort_keys=True, separators=separators, default=str).encode())
    for name, array in arrays:
        x = np.ascontiguousarray(np.asarray(array))
        h.update(f"{name}:{x.dtype}:{x.shape};".encode())
        h.update(x.tobytes())
    return h.hexdigest()


class Locked(ValueError):
    """A directory that another process writes (its `DirLock` is held): one line, naming it."""


class DirLock:
    """An OS file lock (`flock`) on DIR/.lock, which names its holder ("pgjax pid P on HOST").

    `exclusive()` takes it for this process alone, or raises `Locked`; `shared()` takes it (or
    turns an exclusive hold into one) alongside other sharers, waiting while a process holds it
    exclusively. A run's writer holds it exclusively; a sweep's workers share it while they work,
    and the one that creates or replaces the sweep's identity holds it exclusively while it does
    (`files.prepare_out_dir`). Closing (or the process ending) releases it; the last
    holder to close removes the file (a process that locked a file so removed opens the new
    one). The lock holds across hosts where the filesystem supports `flock` (local disks; NFS
    since Linux 2.6.12).
    """

    def __init__(self, directory: Path):
        self.directory, self.path, self.fd = Path(directory), Path(directory) / LOCK, None

    def exclusive(self) -> "DirLock":
        if not self.try_exclusive():
            holder = ""
            for _ in range(20):  # the holder writes its name just after it takes the lock
                holder = os.pread(self.fd, 200, 0).decode(errors="replace").strip()
                if holder:
                    break
                time.sleep(0.05)
            self.close()
            raise Locked(f"{self.directory} is in use by {holder or 'another pgjax process'}; "
                         f"wait until it ends, or use another directory")
        return self

    def try_exclusive(self) -> bool:
        """`exclusive()`, or False (the lock file still open) where another process holds it."""
        if not self._lock(fcntl.LOCK_EX | fcntl.LOCK_NB):
            return False
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"pgjax pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        return True

    def shared(self) -> "DirLock":
        self._lock(fcntl.LOCK_SH)
        return self

    def _lock(self, how: int) -> bool:
        """`flock(how)` on the file DIR/.lock names once locked (False: held elsewhere)."""
        while True:
            if self.fd is None:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            try:
                fcntl.flock(self.fd, how)
            except BlockingIOError:
                return False
            except OSError as e:  # a filesystem without flock (e.g. Lustre without -o flock)
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                print(f"pgjax: {self.directory}: its filesystem does not lock files "
                      f"({e.strerror}); nothing keeps a second writer out", file=sys.stderr)
                return True
            try:
                if os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(self.fd).st_ino:
                    return True
            except FileNotFoundError:
                pass
            os.close(self.fd)  # its last holder removed it meanwhile
            self.fd = None

    def close(self) -> None:
        if self.fd is None:
            return
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # no other holder: remove it
            os.unlink(self.path)
        except OSError:  # held by another, removed, or a filesystem without flock: kept
            pass
        finally:
            os.close(self.fd)
            self.fd = None

    __del__ = close

    def __enter__(self) -> "DirLock":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def remove(path: Path) -> None:
    """Delete an entry pgjax named: a file, a folder with all it holds, or a symbolic link
    (the link itself: a link is never followed, here or inside a folder)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def set_aside(path: Path, stem: str, suffixes: tuple[str, ...] = ("",)) -> str:
    """Move the entries `path` + each suffix (those missing are skipped) beside it, to `stem` +
    the suffix, or to `stem-2`, `stem-3`, ... where a name of `stem` is taken; returns the
    stem used. Nothing is replaced: each new name is taken exclusively (a file's by a hard
    link, a folder's by creating it empty for the rename to take), and FileExistsError says
    that another process took one meanwhile."""
    n, name = 1, stem
    while any(os.path.lexists(path.parent / f"{name}{suffix}") for suffix in suffixes):
        n += 1
        name = f"{stem}-{n}"
    for suffix in suffixes:
        source, target = Path(f"{path}{suffix}"), path.parent / f"{name}{suffix}"
        if source.is_dir() and not source.is_symlink():
            target.mkdir()
            source.rename(target)
            continue
        try:
            os.link(source, target, follow_symlinks=False)
        except FileNotFoundError:
            continue
        source.unlink()
    return name


def foreign(path: Path, layout: dict, prefix: str = "") -> list[str]:
    """The entries under the folder `path` that `layout` does not name, as "sub/name", sorted.

    `layout` maps a name's pattern (a regex it must match whole) to None (a file, or a folder
    pgjax writes as a whole) or to the layout of the folder it names. Dot-named temp files are
    pgjax's own; a symbolic link where `layout` names a folder is foreign (never followed).
    """
    names = []
    for entry in sorted(path.iterdir()):
        if entry.name.startswith("."):
            continue
        inside = next((v for k, v in layout.items() if re.fullmatch(k, entry.name)), False)
        if inside is False or (inside is not None
                               and (entry.is_symlink() or not entry.is_dir())):
            names.append(prefix + entry.name)
        elif inside is not None:
            names += foreign(entry, inside, f"{prefix}{entry.name}/")
    return names
