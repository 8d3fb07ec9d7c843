"""MkDocs hooks of the documentation site (mkdocs.yml `hooks:`), run at build time.

- The CLI reference (docs/reference/cli.md) is generated here from the parsers `pgjax` itself
  builds (tyro over `pgjax.config.Config` and the commands' docstrings), so its flags cannot
  drift from the code: the page holds the marker `<!-- cli-reference -->` where the tables go.
- The figures under experiments/ are added to the site at their own paths (`experiments/...`),
  so pages show the committed figures without copies in docs/.
"""

import html
import re
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- cli-reference -->"
FIGURES = ("experiments/**/*.png",)


def flags(command) -> list[dict]:
    """Each option of one `pgjax` command as tyro parses it: {"flags", "default", "help",
    "field"} (field: the Config field the flag sets, or None for a command option)."""
    import tyro

    from pgjax.config import FIELDS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # get_parser: fine at build time
        parser = tyro.extras.get_parser(command, config=(tyro.conf.OmitArgPrefixes,))
    rows = []
    for action in parser._actions:
        if "-h" in action.option_strings:
            continue
        text = " ".join((action.help or "").split())
        default = None
        if text.endswith(")") and (at := text.rfind("(default: ")) >= 0:
            text, default = text[:at].rstrip(), text[at + len("(default: "):-1]
        field = action.dest.split(".")[-1].replace("-", "_")
        names = action.option_strings or [field.upper()]
        rows.append({"flags": names, "default": default, "help": text,
                     "field": field if field in FIELDS else None,
                     "choices": sorted(action.choices, key=str) if action.choices else None})
    return rows


def escape(text: str) -> str:
    """Plain text for a markdown table cell (`code` spans kept as they are)."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):  # outside code spans
        parts[i] = re.sub(r"([\\*_\[\]])", r"\\\1", html.escape(parts[i], quote=False))
    return "`".join(part.replace("|", "\\|") for part in parts)


def cli_reference() -> str:
    """Markdown tables of every command's flags, Config fields marked static or leaf."""
    from pgjax.cli import COMMANDS, CONFIG_HELP
    from pgjax.config import LEAVES

    out = []
    for name, command in COMMANDS.items():
        summary = (command.__doc__ or "").strip().splitlines()[0]
        out += [f"## pgjax {name}", "", escape(summary), ""]
        rows = flags(command)
        if name == "train":
            rows.insert(0, {"flags": ["--config"], "default": None, "help": CONFIG_HELP,
                            "field": None, "choices": None})
        command_rows = [r for r in rows if r["field"] is None]
        config_rows = [r for r in rows if r["field"] is not None]
        out += table(command_rows, kind=False)
        if config_rows:
            out += ["", f"Config fields of `pgjax {name}` (`static`: fixes shapes or loop lengths, "
                    "a new value compiles a new program; `leaf`: a pytree leaf that may be "
                    "traced, so a grid of values vmaps into one program):", ""]
            for row in config_rows:
                row["kind"] = "leaf" if row["field"] in LEAVES else "static"
            out += table(config_rows, kind=True)
        out.append("")
    return "\n".join(out)


def table(rows: list[dict], *, kind: bool) -> list[str]:
    head = "| flag | default | kind | meaning |" if kind else "| flag | default | meaning |"
    lines = [head, "| --- | --- | --- | --- |" if kind else "| --- | --- | --- |"]
    for row in rows:
        flag = ", ".join(f"`{f}`" for f in row["flags"])
        default = "" if row["default"] in (None, "") else f"`{row['default']}`"
        meaning = escape(row["help"])
        if row["choices"]:
            listed = ", ".join(f"`{c}`" for c in row["choices"])
            meaning = f"{meaning} (one of {listed})" if meaning else f"one of {listed}"
        cells = [flag, default] + ([f"`{row['kind']}`"] if kind else []) + [meaning]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def on_page_markdown(markdown, page, config, files):
    if MARKER in markdown:
        return markdown.replace(MARKER, cli_reference())
    return markdown


def on_files(files, config):
    from mkdocs.structure.files import File

    for pattern in FIGURES:
        for path in sorted(ROOT.glob(pattern)):
            uri = path.relative_to(ROOT).as_posix()
            if files.get_file_from_path(uri) is None:
                files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files
