"""`pgjax` commands run in the test's own process, for the tests that check what they print."""

from pgjax.cli import main


def cli(capsys, *argv) -> tuple[int, str]:
    """Exit status and stderr of `pgjax ARGV` run in this process."""
    try:
        main(list(argv))
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err.strip()
