"""`pgjax train --config FILE`: config fields from a TOML, YAML or JSON file (the one reader,
`pgjax.config.load_file`), overridden by flags; a bad file is one line and exit status 2."""

import json
from pathlib import Path

import pytest

from pgjax.cli import main, parse
from pgjax.config import Config, from_file, load_file

ROOT = Path(__file__).resolve().parent.parent


def test_train_from_an_experiment_config_with_flags_over_it(tmp_path, capsys):
    out = tmp_path / "acrobot"
    main(["train", "--config", str(ROOT / "experiments" / "configs" / "acrobot.toml"),
          "--seeds", "4", "--num-envs", "4", "--total-timesteps", "4000", "--no-progress",
          "--out", str(out)])
    record = json.loads((out / "config.json").read_text())
    assert record["seeds"] == 4
    config = record["config"]
    assert config["env"] == "Acrobot-v1" and config["num_steps"] == 500  # the file's fields
    assert config["num_envs"] == 4 and config["total_timesteps"] == 4000  # flags over them
    assert config["lr"] == Config().lr  # a field neither gives: the default
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env"] == "Acrobot-v1" and len(summary["final_return"]["per_seed"]) == 4
    err = capsys.readouterr().err
    assert "training its base config (reference, variant: read by scripts/reproduce.py)" in err


@pytest.mark.parametrize("name, text", [
    ("c.toml", 'env = "Acrobot-v1"\nlr = 3e-3\nhidden = [16, 16]\n'),
    ("c.yaml", "env: Acrobot-v1\nlr: 3e-3\nhidden: [16, 16]\n"),
    ("c.json", '{"env": "Acrobot-v1", "lr": 3e-3, "hidden": [16, 16]}'),
])
def test_each_format_reads_the_same_config(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    assert load_file(path) == {"env": "Acrobot-v1", "lr": 3e-3, "hidden": [16, 16]}
    expected = Config(env="Acrobot-v1", lr=3e-3, hidden=(16, 16))
    assert from_file(path) == (expected, {})
    parsed = parse(["train", "--config", str(path)])
    assert parsed.keywords["config"] == expected
    parsed = parse(["train", f"--config={path}", "--lr", "0.1", "--no-progress"])
    assert parsed.keywords["config"] == expected.replace(lr=0.1)
    assert parsed.keywords["progress"] is False


@pytest.mark.parametrize("name, text, message", [
    ("c.toml", 'env = "Acrobot-v1"\nlrr = 0.1\n', "c.toml: unknown config field 'lrr'; "
                                                  "did you mean lr?"),
    ("c.yaml", "lr: fast\n", "c.yaml: lr must be a number, got 'fast'"),
    ("c.yaml", "lr: 0.1\nlr: 0.2\n", "c.yaml: lr is given twice (line 2)"),
    ("c.json", '{"lr": 0.1, "lr": 0.2}', "c.json: lr is given twice"),
    ("c.json", '{"lr": ', "c.json is not valid JSON"),
    ("c.yaml", "- 1\n- 2\n", "c.yaml: a config file must be a mapping of fields, got list"),
    ("c.toml", "env = \n", "c.toml is not valid TOML (Invalid value"),
    ("missing.toml", None, "missing.toml: cannot read it (No such file or directory)"),
])
def test_a_bad_config_file_is_one_line(tmp_path, capsys, name, text, message):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", str(path), "--no-progress", "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"pgjax: error: {tmp_path / message}"), line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, message", [
    (["--config"], "--config needs a file (TOML, YAML or JSON)"),
    (["--config", "a.toml", "--config", "b.toml"], "--config is given more than once"),
])
def test_a_bad_config_option_is_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *argv])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"pgjax: error: {message}\n"


def test_a_value_the_config_refuses_is_one_line(tmp_path, capsys):
    (tmp_path / "c.json").write_text('{"gamma": 2}')
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", str(tmp_path / "c.json"), "--no-progress"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "pgjax: error: gamma must be in [0, 1], got 2.0\n"
