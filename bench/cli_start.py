"""How fast the CLI answers ``--help`` and ``--version``, against importing typer alone.

Run by hand: ``.venv/bin/python -m bench.cli_start [--repeat N]``. Each command runs in a
fresh process; the best wall time and the peak RSS (``ru_maxrss`` of the child) are kept.
The reference, ``python -c "import typer"``, is measured in the same run. Target: ``--help``
within 1.5x of the reference, and none of pyarrow, pandas or aiohttp imported.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

HEAVY = ("pyarrow", "pandas", "aiohttp", "numpy")


def measure(command: list[str], repeat: int) -> tuple[float, float]:
    """Best wall seconds and peak RSS in MB of ``command`` over ``repeat`` fresh processes."""
    best, rss = float("inf"), 0.0
    for _ in range(repeat):
        started = time.perf_counter()
        pid = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid
        _, status, usage = os.wait4(pid, 0)
        best = min(best, time.perf_counter() - started)
        rss = max(rss, usage.ru_maxrss / 1024)  # kB on Linux
        assert os.waitstatus_to_exitcode(status) == 0, command
    return best, rss


def heavy_imports(args: list[str]) -> list[str]:
    """Which heavy packages the CLI imports to answer ``args``."""
    code = (
        "import sys; sys.argv = ['event-backfill', *sys.argv[1:]]\n"
        "from importer._entry import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print('heavy:' + ','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=False
    )
    last = done.stderr.strip().splitlines()[-1]
    return [m for m in last.removeprefix("heavy:").split(",") if m]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    python = sys.executable
    reference = measure([python, "-c", "import typer"], args.repeat)
    print(f"{'command':<40} {'best s':>8} {'ratio':>6} {'RSS MB':>8}  heavy imports")
    label = 'python -c "import typer"'
    print(f"{label:<40} {reference[0]:>8.3f} {1:>6.2f} {reference[1]:>8.1f}")
    for cli_args in (["--help"], ["--version"], ["send", "--help"]):
        wall, rss = measure([python, "-m", "importer", *cli_args], args.repeat)
        heavy = heavy_imports(cli_args)
        label = "event-backfill " + " ".join(cli_args)
        print(
            f"{label:<40} {wall:>8.3f} {wall / reference[0]:>6.2f} {rss:>8.1f}  "
            f"{', '.join(heavy) or 'none'}"
        )


if __name__ == "__main__":
    main()
