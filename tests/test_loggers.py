"""TensorBoard and W&B (offline) loggers write what metrics.csv holds."""

import csv
import glob
import json
import struct

import pytest

from pgjax.cli import main

TINY = ["--total-timesteps", "4000", "--num-envs", "8", "--num-steps", "100", "--seeds", "2",
        "--no-progress"]


def read_tensorboard(run_dir):
    """{tag: [(step, value)]} from the TFRecord event file (length, crc, event, crc)."""
    from tensorboardX.proto import event_pb2

    (path,) = glob.glob(str(run_dir / "tensorboard" / "events.*"))
    data, i, tags = open(path, "rb").read(), 0, {}
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i : i + 8])
        event = event_pb2.Event()
        event.ParseFromString(data[i + 12 : i + 12 + n])
        i += 12 + n + 4
        for v in event.summary.value:
            tags.setdefault(v.tag, []).append((event.step, v.simple_value))
    return tags


def test_tensorboard_and_wandb_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    out = tmp_path / "run"
    main(["train", *TINY, "--out", str(out), "--log", "tensorboard", "wandb"])
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    tags = read_tensorboard(out)
    assert [s for s, _ in tags["return_mean"]] == [int(r["env_steps"]) for r in rows]
    for (_, value), row in zip(tags["loss"], rows, strict=True):
        assert value == pytest.approx(float(row["loss"]), rel=1e-6)
    (wandb_log,) = glob.glob(str(out / "wandb" / "offline-run-*" / "run-*.wandb"))
    data = open(wandb_log, "rb").read()
    assert data.count(b"return_mean") >= len(rows) and b"grad_norm" in data
    assert json.dumps(float(rows[-1]["return_mean"])).encode() in data


def test_missing_logger_package_is_one_line(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    fake = lambda name, *args: None if name == "tensorboardX" else real(name, *args)
    monkeypatch.setattr(importlib.util, "find_spec", fake)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *TINY, "--out", str(tmp_path / "run"), "--log", "tensorboard"])
    assert exit_info.value.code == 2
    assert "needs tensorboardX: pip install 'pgjax[tensorboard]'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_resume_of_a_run_whose_logger_is_missing_is_one_line(tmp_path, capsys, monkeypatch):
    import importlib.util

    out = tmp_path / "run"
    main(["train", *TINY, "--out", str(out), "--log", "tensorboard"])
    (out / "summary.json").unlink()  # an unfinished run: resuming trains, with its loggers
    real = importlib.util.find_spec
    fake = lambda name, *args: None if name == "tensorboardX" else real(name, *args)
    monkeypatch.setattr(importlib.util, "find_spec", fake)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--resume", str(out), "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("needs tensorboardX: pip install 'pgjax[tensorboard]'") and "\n" not in err
    assert f"{out} logs as it was recorded" in err
