"""The record layer: exclusive create, the directory lock, deletion without following links,
setting aside without replacing."""

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


def test_set_aside_moves_files_and_folders_to_a_free_name_and_replaces_nothing(tmp_path):
    for suffix in (".npz", ".json"):
        (tmp_path / f"chunk-1{suffix}").write_text(suffix)
    (tmp_path / "damaged-chunk-1.json").write_text("set aside before")
    stem = records.set_aside(tmp_path / "chunk-1", "damaged-chunk-1", (".npz", ".json"))
    assert stem == "damaged-chunk-1-2"  # one of the first names is taken: both move on
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "damaged-chunk-1-2.json", "damaged-chunk-1-2.npz", "damaged-chunk-1.json"]
    assert (tmp_path / "damaged-chunk-1.json").read_text() == "set aside before"
    assert (tmp_path / "damaged-chunk-1-2.npz").read_text() == ".npz"

    (tmp_path / "chunk-2.json").write_text("record only")  # a missing .npz is skipped
    assert records.set_aside(tmp_path / "chunk-2", "aside-2", (".npz", ".json")) == "aside-2"
    assert (tmp_path / "aside-2.json").read_text() == "record only"

    for n in range(3):  # a folder, three times under one stem
        (tmp_path / "5").mkdir()
        (tmp_path / "5" / "data").write_text(str(n))
        assert records.set_aside(tmp_path / "5", "damaged-5") == \
            ["damaged-5", "damaged-5-2", "damaged-5-3"][n]
    assert [(tmp_path / name / "data").read_text() for name in
            ("damaged-5", "damaged-5-2", "damaged-5-3")] == ["0", "1", "2"]

    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "6").symlink_to(target)  # the link moves, not what it points to
    assert records.set_aside(tmp_path / "6", "damaged-6") == "damaged-6"
    assert (tmp_path / "damaged-6").is_symlink() and target.is_dir()


def test_set_aside_refuses_a_name_taken_meanwhile(tmp_path, monkeypatch):
    (tmp_path / "7").mkdir()  # a folder
    (tmp_path / "damaged-7").mkdir()
    (tmp_path / "damaged-7" / "theirs").write_text("")
    (tmp_path / "8").write_text("mine")  # a file
    (tmp_path / "damaged-8").write_text("theirs")
    monkeypatch.setattr(records.os.path, "lexists", lambda path: False)  # both looked free
    for name in ("7", "8"):
        with pytest.raises(FileExistsError):
            records.set_aside(tmp_path / name, f"damaged-{name}")
    assert (tmp_path / "7").is_dir() and (tmp_path / "damaged-7" / "theirs").exists()
    assert (tmp_path / "8").read_text() == "mine"
    assert (tmp_path / "damaged-8").read_text() == "theirs"


def test_a_filesystem_without_file_locks_is_named_not_fatal(tmp_path, monkeypatch, capsys):
    def no_locks(fd, how):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(records.fcntl, "flock", no_locks)
    records.DirLock(tmp_path).exclusive().close()
    assert capsys.readouterr().err.strip() == (
        f"pgjax: {tmp_path}: its filesystem does not lock files (No locks available); nothing "
        f"keeps a second writer out")


def test_one_digest_for_json_and_arrays():
    """`digest` of a value alone is the sha256 of its compact JSON with keys sorted, as
    config.json's config_sha256 and seeds_sha256 have always been; arrays add their name,
    dtype, shape and bytes, in order."""
    import hashlib
    import json

    import numpy as np

    fields = {"seeds": 2, "seed": 0}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    assert records.digest(fields) == hashlib.sha256(text.encode()).hexdigest()
    a = np.arange(3, dtype=np.int32)
    assert records.digest(None, [("a", a)]) == hashlib.sha256(
        b"a:int32:(3,);" + a.tobytes()).hexdigest()
    assert records.digest(1, [("a", a)]) != records.digest(2, [("a", a)])
    assert records.digest(fields, separators=(", ", ": ")) == hashlib.sha256(
        json.dumps(fields, sort_keys=True).encode()).hexdigest()


def test_a_record_of_the_first_format_reads_in_the_current_shape():
    """A config.json of format 1 (tests/data: no format, settings, components, cpu or digests)
    reads in one shape: its missing fields as the behaviour of its time, a resume's checkpoint
    schedule where given."""
    from pathlib import Path

    from pgjax import runs
    from pgjax.experiment import Settings, load_run

    run = Path(__file__).resolve().parent / "data" / "recorded" / "cp_value"
    config, record = load_run(run)
    assert record["format"] == runs.FORMAT and record["components"] == {"given": []}
    assert record["cpu"] is None and record["config_sha256"] is None
    assert Settings.of(record) == Settings(seeds=2, seed=0, chunk_updates=5)
    _, record = load_run(run, checkpoint_every=2, checkpoint_minutes=1.0)
    assert (record["checkpoint_every"], record["checkpoint_minutes"]) == (2, 1.0)
    assert record["keep_checkpoints"] == Settings.keep_checkpoints  # its default, as before
