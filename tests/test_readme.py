"""The README's composition example runs as printed and learns."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_runs(capsys):
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
    count, mean = re.search(r"\(Array\((\d+).*?Array\(([\d.]+)", capsys.readouterr().out).groups()
    assert int(count) > 0 and float(mean) > 150  # a random policy averages ~22


def test_readme_quickstart_matches_ci():
    ci = (README.parent / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in README.read_text()
