"""The README's code blocks run as printed and learn."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_example_runs(capsys):
    exec(compile(python_blocks()[0], "README.md", "exec"), {})
    count, mean = re.search(r"\(Array\((\d+).*?Array\(([\d.]+)", capsys.readouterr().out).groups()
    assert int(count) > 0 and float(mean) > 150  # a random policy averages ~22


@pytest.mark.slow
def test_readme_own_components_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(python_blocks()[1], "README.md", "exec"), scope)
    final = scope["metrics"].episode_return[:, -1]
    assert final.min() > 150, final  # the long pole: a random policy averages ~22
    assert (tmp_path / "runs" / "mine" / "summary.json").exists()
    greedy = eval(re.search(r"\{'per_seed_mean'.*\}", capsys.readouterr().out).group(0))
    assert len(greedy["per_seed_mean"]) == 4 and greedy["mean"] > 150


def test_readme_quickstart_matches_ci():
    ci = (README.parent / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in README.read_text()
