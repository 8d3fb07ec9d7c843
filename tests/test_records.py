"""The record layer: exclusive create, the directory lock, deletion without following links."""

import errno
import os
import subprocess
import sys

import pytest

from pgjax import records


def test_create_new_creates_a_name_once(tmp_path):
    path = tmp_path / "sweep.json"
    assert records.create_new(path, lambda f: f.write("first"))
    assert not records.create_new(path, lambda f: f.write("second"))
    assert path.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["sweep.json"]  # no temp file left


def test_a_directory_lock_is_exclusive_or_shared_and_its_file_goes_with_its_last_holder(
        tmp_path):
    first = records.DirLock(tmp_path).exclusive()
    holder = f"pgjax pid {os.getpid()} on "
    assert (tmp_path / records.LOCK).read_text().startswith(holder)
    with pytest.raises(records.Locked, match=f"{tmp_path} is in use by {holder}"):
        records.DirLock(tmp_path).exclusive()
    first.shared()
    second = records.DirLock(tmp_path).shared()  # workers of one sweep share it
    assert not records.DirLock(tmp_path).try_exclusive()
    first.close()
    assert (tmp_path / records.LOCK).exists()
    second.close()
    assert not (tmp_path / records.LOCK).exists()
    records.DirLock(tmp_path).exclusive().close()


def test_a_lock_holds_across_processes_and_dies_with_its_holder(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pgjax.records import DirLock; "
         "lock = DirLock(sys.argv[1]).exclusive(); print('held', flush=True); sys.stdin.read()",
         str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(records.Locked, match=f"in use by pgjax pid {holder.pid} on "):
            records.DirLock(tmp_path).exclusive()
    finally:
        holder.kill()
        holder.wait()
    records.DirLock(tmp_path).exclusive().close()  # a killed holder's lock is released


def test_remove_deletes_a_link_not_what_it_points_to(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "mine.txt").write_text("mine")
    (tmp_path / "checkpoints").symlink_to(tmp_path / "elsewhere")
    records.remove(tmp_path / "checkpoints")
    assert (tmp_path / "elsewhere" / "mine.txt").read_text() == "mine"
    assert not (tmp_path / "checkpoints").exists()


def test_a_filesystem_without_file_locks_is_named_not_fatal(tmp_path, monkeypatch, capsys):
    def no_locks(fd, how):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(records.fcntl, "flock", no_locks)
    records.DirLock(tmp_path).exclusive().close()
    assert capsys.readouterr().err.strip() == (
        f"pgjax: {tmp_path}: its filesystem does not lock files (No locks available); nothing "
        f"keeps a second writer out")
