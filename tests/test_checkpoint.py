"""Checkpoints: exact round trip, fallback past damaged ones, resume after SIGKILL."""

import csv
import functools
import json
import shutil
import sys

import jax
import numpy as np
import pytest
from killed_runs import kill_after_first_checkpoint

import pgjax
from pgjax.checkpoint import CheckpointError, Checkpoints
from pgjax.cli import main

CONFIG = pgjax.Config(num_envs=4, num_steps=10, total_timesteps=4 * 10 * 3)


def leaves_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def states(n):
    init = jax.jit(jax.vmap(functools.partial(pgjax.init_state, CONFIG)))
    step = jax.jit(jax.vmap(functools.partial(pgjax.train_chunk, CONFIG, num_updates=1)))
    state = init(jax.random.split(jax.random.key(0), 2))
    out = []
    for _ in range(n):
        state = step(state)[0]
        out.append(state)
    return out


def test_round_trip_and_fallback_past_damaged(tmp_path, capsys):
    s1, s2 = states(2)
    ckpt = Checkpoints(tmp_path)
    ckpt.save(1, s1)
    ckpt.save(2, s2)
    step, restored = ckpt.restore(s1)
    assert step == 2
    leaves_equal(restored, s2)
    assert jax.dtypes.issubdtype(restored.key.dtype, jax.dtypes.prng_key)
    for f in (tmp_path / "checkpoints" / "2").rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"\0garbage")
    step, restored = ckpt.restore(s1)
    assert step == 1
    leaves_equal(restored, s1)
    assert "checkpoint 2 is damaged" in capsys.readouterr().err
    for f in (tmp_path / "checkpoints" / "1").rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"\0garbage")
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        ckpt.restore(s1)


def test_a_checkpoint_whose_bytes_changed_is_damaged(tmp_path, capsys):
    """Checkpoint 2's files replaced by checkpoint 1's: they decode, but not to the arrays
    whose sha256 was written with checkpoint 2, so the restore falls back to checkpoint 1."""
    s1, s2 = states(2)
    ckpt = Checkpoints(tmp_path)
    ckpt.save(1, s1)
    ckpt.save(2, s2)
    ckpt.wait()
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in (root / "digests").iterdir()) == ["1.sha256", "2.sha256"]
    shutil.rmtree(root / "2" / "default")
    shutil.copytree(root / "1" / "default", root / "2" / "default")
    step, restored = ckpt.restore(s1)
    assert step == 1
    leaves_equal(restored, s1)
    assert capsys.readouterr().err.strip() == (
        "pgjax: checkpoint 2 is damaged (its arrays do not match the sha256 written with them)")


def rows_without_wall(run_dir):
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    return [{k: v for k, v in r.items() if k != "wall_seconds"} for r in rows]


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted(tmp_path):
    args = ["train", "--num-envs", "64", "--num-steps", "200", "--total-timesteps",
            str(64 * 200 * 30), "--seeds", "2", "--chunks", "30", "--checkpoint-every", "1",
            "--no-progress"]
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    kill_after_first_checkpoint([sys.executable, "-m", "pgjax.cli", *args, "--out", str(killed)],
                                killed)

    main(["train", "--resume", str(killed), "--no-progress"])
    main([*args, "--out", str(whole)])
    resumed = json.loads((killed / "summary.json").read_text())
    assert 0 < resumed["resumed_from_update"] < 30
    assert rows_without_wall(killed) == rows_without_wall(whole)
    assert len(rows_without_wall(whole)) == 30
    full = json.loads((whole / "summary.json").read_text())
    assert resumed["final_return"] == full["final_return"]


def test_resume_of_a_non_run_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--resume", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "is not a pgjax run directory" in capsys.readouterr().err


def checkpoint_steps(run_dir):
    return sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())


def test_checkpoint_schedule_by_time_or_by_chunks(tmp_path):
    config = pgjax.Config(num_envs=4, num_steps=10, total_timesteps=4 * 10 * 6)
    run = functools.partial(pgjax.train_run, config, seeds=1, chunks=6, progress=False)
    run(tmp_path / "short")  # shorter than the default 5 minutes: only the final checkpoint
    assert checkpoint_steps(tmp_path / "short") == [6]
    run(tmp_path / "often", checkpoint_minutes=1e-9)  # due after every chunk (max_to_keep 3)
    assert checkpoint_steps(tmp_path / "often") == [4, 5, 6]
    digests = sorted(p.name for p in (tmp_path / "often" / "checkpoints" / "digests").iterdir())
    assert digests == ["4.sha256", "5.sha256", "6.sha256"]  # those of deleted ones go too
    run(tmp_path / "chunks", checkpoint_every=4, checkpoint_minutes=1e-9)  # chunks win
    assert checkpoint_steps(tmp_path / "chunks") == [4, 6]
    record = json.loads((tmp_path / "chunks" / "config.json").read_text())
    assert (record["checkpoint_every"], record["checkpoint_minutes"]) == (4, 1e-9)
    for bad in ({"checkpoint_every": 0}, {"checkpoint_minutes": 0.0}, {"keep_checkpoints": 0}):
        with pytest.raises(ValueError, match="must be positive"):
            run(tmp_path / "bad", **bad)
    with pytest.raises(ValueError, match="keep_checkpoints must be an integer or None, got 2.5"):
        run(tmp_path / "bad", keep_checkpoints=2.5)


def test_keep_checkpoints_keeps_every_one_also_on_resume(tmp_path, capsys):
    config = pgjax.Config(num_envs=4, num_steps=10, total_timesteps=4 * 10 * 6)
    run_dir = tmp_path / "all"
    pgjax.train_run(config, run_dir, seeds=1, chunks=6, checkpoint_every=1, keep_checkpoints=None,
                    progress=False)
    assert checkpoint_steps(run_dir) == [1, 2, 3, 4, 5, 6]
    (run_dir / "summary.json").unlink()
    for step in ("5", "6"):  # as if killed during chunk 5
        shutil.rmtree(run_dir / "checkpoints" / step)
    pgjax.train_run(None, run_dir, resume=True, progress=False)  # keeps what config.json says
    assert checkpoint_steps(run_dir) == [1, 2, 3, 4, 5, 6]
    assert pgjax.evaluate_run(run_dir, episodes=1, step=2)["checkpoint_update"] == 2
    pgjax.train_run(config, tmp_path / "three", seeds=1, chunks=6, checkpoint_every=1,
                    progress=False)
    with pytest.raises(SystemExit):
        main(["eval", str(tmp_path / "three"), "--checkpoint", "2"])
    assert capsys.readouterr().err.strip() == (
        "pgjax: error: no checkpoint 2; available: 4, 5, 6 (a run keeps its newest 3 unless "
        "trained with --keep-checkpoints)")


def test_resume_keeps_a_recorded_chunk_schedule(tmp_path):
    """config.json files written before the time schedule hold only `checkpoint_every`."""
    config = pgjax.Config(num_envs=4, num_steps=10, total_timesteps=4 * 10 * 6)
    run_dir = tmp_path / "old"
    pgjax.train_run(config, run_dir, seeds=1, chunks=6, checkpoint_every=1, progress=False)
    record = json.loads((run_dir / "config.json").read_text())
    del record["checkpoint_minutes"]
    (run_dir / "config.json").write_text(json.dumps(record))
    (run_dir / "summary.json").unlink()
    for step in ("5", "6"):  # as if killed during chunk 5
        shutil.rmtree(run_dir / "checkpoints" / step)
    pgjax.train_run(None, run_dir, resume=True, progress=False)
    assert checkpoint_steps(run_dir) == [4, 5, 6]  # by time it would be [4, 6]


def test_retention_deletes_only_checkpoints_wholly_orbax_s(tmp_path):
    """A checkpoint folder holding a user's file (or a symbolic link in its place) is kept past
    `max_to_keep`; so is a user's file beside the digests; the others go."""
    s1, s2 = states(2)
    ckpt = Checkpoints(tmp_path, 2)
    ckpt.save(1, s1)
    ckpt.save(2, s2)
    ckpt.wait()
    root = tmp_path / "checkpoints"
    (root / "1" / "notes.txt").write_text("mine")
    (root / "digests" / "notes.txt").write_text("mine")
    for step in (3, 4, 5):
        ckpt.save(step, s2)
    ckpt.close()
    assert checkpoint_steps(tmp_path) == [1, 4, 5]
    assert (root / "1" / "notes.txt").read_text() == "mine"
    assert (root / "digests" / "notes.txt").read_text() == "mine"
    elsewhere = tmp_path / "elsewhere"
    (root / "4").rename(elsewhere)
    (root / "4").symlink_to(elsewhere)
    ckpt = Checkpoints(tmp_path, 1)
    ckpt.save(6, s2)
    ckpt.close()
    assert checkpoint_steps(tmp_path) == [1, 4, 6] and (elsewhere / "default").is_dir()


def test_a_symlinked_checkpoints_folder_is_refused(tmp_path):
    """Retention would delete through it, outside the run directory."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoints").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(CheckpointError, match="is not a directory but a symbolic link"):
        Checkpoints(tmp_path / "run")


def test_a_digest_covers_the_update_and_one_of_the_earlier_format_still_verifies(tmp_path,
                                                                                  capsys):
    """A checkpoint and its digest renamed to another update fail the digest where the state
    has no update counter to tell (its update is then the one its name says); a digest written
    before the update was in it (the arrays alone, no format) still verifies its checkpoint."""
    from pgjax.checkpoint import _arrays, to_saveable
    from pgjax.records import digest

    (s1,) = states(1)
    ckpt = Checkpoints(tmp_path)
    ckpt.save(1, s1)
    ckpt.wait()
    digests = tmp_path / "checkpoints" / "digests"
    tree = to_saveable(s1)
    assert digests.joinpath("1.sha256").read_text() == f"2 {digest({'update': 1}, _arrays(tree))}\n"
    assert not ckpt._digest_differs(1, tree, 1)
    assert ckpt._digest_differs(2, tree, 2) is False  # no digest: unchecked
    digests.joinpath("2.sha256").write_text(digests.joinpath("1.sha256").read_text())
    assert ckpt._digest_differs(2, tree, 2)  # renamed to update 2: not its digest
    digests.joinpath("1.sha256").write_text(digest(None, _arrays(tree)) + "\n")  # format 1
    assert not ckpt._digest_differs(1, tree, 1)
    assert ckpt.restore(s1)[0] == 1
    ckpt.close()
