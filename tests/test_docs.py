"""The documentation's code runs as printed: every ```python block of README.md and
docs/**/*.md, a page's blocks in order in one namespace (as a reader runs them), in a fresh
working directory. A block right after `<!-- skip: why -->` is not run (keep those few).
Pages whose output says something checkable have a check below."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"(<!-- skip:[^>]*-->\s*\n)?```python\n(.*?)```", re.S)


def python_blocks(path: Path) -> list[str]:
    """The page's ```python blocks to run, in order (skip-marked ones left out)."""
    return [code for skip, code in BLOCK.findall(path.read_text()) if not skip]


def name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def check_learns(out: str, scope: dict) -> None:
    count, mean = re.search(r"\(Array\((\d+).*?Array\(([\d.]+)", out).groups()
    assert int(count) > 0 and float(mean) > 150  # a random policy averages ~22


def check_own_components(out: str, scope: dict) -> None:
    final = scope["metrics"].episode_return[:, -1]
    assert final.min() > 150, final  # the long pole: a random policy averages ~22
    assert Path("runs/mine/summary.json").exists()
    greedy = eval(re.search(r"\{'per_seed_mean'.*\}", out).group(0))
    assert len(greedy["per_seed_mean"]) == 4 and greedy["mean"] > 150


def check_own_env(out: str, scope: dict) -> None:
    assert "False True [0. 1.] [0. 0.]" in out  # truncated by the time limit, auto-reset
    final = scope["metrics"].episode_return[:, -1]
    assert final.min() > 0.9, final  # 0.95 is optimal; a random walk mostly runs out of time


def check_own_estimator(out: str, scope: dict) -> None:
    assert out.strip().endswith("True")


CHECKS = {
    "docs/getting-started.md": check_learns,
    "docs/guides/own-network.md": check_own_components,
    "docs/guides/own-env.md": check_own_env,
    "docs/guides/own-estimator.md": check_own_estimator,
}
SLOW = {"docs/guides/own-network.md"}  # trains 4 seeds twice to a learned policy
# The README's Python quickstart is the first block of Getting started, which runs above.
SAME_AS = {"README.md": "docs/getting-started.md"}


def pages_to_run():
    for path in PAGES:
        if not python_blocks(path) or name(path) in SAME_AS:
            continue
        marks = [pytest.mark.slow] if name(path) in SLOW else []
        yield pytest.param(path, id=name(path), marks=marks)


@pytest.mark.parametrize("path", list(pages_to_run()))
def test_page_code_runs(path, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    scope = {"__name__": "__main__"}
    for i, code in enumerate(python_blocks(path)):
        exec(compile(code, f"{name(path)} block {i}", "exec"), scope)
    if (check := CHECKS.get(name(path))) is not None:
        check(capsys.readouterr().out, scope)


def test_checked_pages_have_code():
    assert set(CHECKS) | set(SAME_AS.values()) <= {name(p) for p in PAGES if python_blocks(p)}


def test_readme_python_is_a_page_that_runs():
    for page, same in SAME_AS.items():
        blocks = python_blocks(ROOT / page)
        assert blocks and all(b in python_blocks(ROOT / same) for b in blocks), page


def test_readme_quickstart_matches_ci():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] in README.read_text()  # the test command
    docs = [line for line in ci if "mkdocs build --strict" in line]
    assert docs and docs[0].split("#")[0].strip() in README.read_text()


def test_readme_is_short():
    assert len(README.read_text().splitlines()) <= 250


def test_api_page_documents_every_export():
    import pgjax

    page = (ROOT / "docs" / "reference" / "api.md").read_text()
    documented = {m.split(".")[-1] for m in re.findall(r"^::: ([\w.]+)", page, re.M)}
    assert set(pgjax.__all__) <= documented, set(pgjax.__all__) - documented
    for target in re.findall(r"^::: ([\w.]+)", page, re.M):  # each export is that object
        module, attr = target.rsplit(".", 1)
        found = getattr(importlib.import_module(module), attr)
        assert attr not in pgjax.__all__ or found is getattr(pgjax, attr), target


def test_cli_reference_lists_every_flag():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "scripts" / "docs_hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    from pgjax.cli import COMMANDS
    from pgjax.config import FIELDS

    page = hooks.on_page_markdown((ROOT / "docs" / "reference" / "cli.md").read_text(),
                                  None, None, None)
    for command in COMMANDS:
        assert f"## pgjax {command}" in page
    for field in FIELDS:
        assert f"`--{field.replace('_', '-')}`" in page, field
    assert "`--config`" in page and "`--seeds`" in page and "`--lease-seconds`" in page
