"""The console script's first step: a Ctrl-C while the libraries load ends quietly."""

from __future__ import annotations

import sys


def main() -> None:
    """Load the CLI, then run it."""
    try:
        from importer.cli import main as run
    except KeyboardInterrupt:
        sys.stderr.write("interrupted before starting: nothing was done\n")
        raise SystemExit(1) from None
    run()
