"""Resume vs fresh with a big dedupe index: ``.venv/bin/python -m bench.resume``.

Against nginx on 127.0.0.1 (as ``bench.throughput``), with the order id as dedupe key:

  1. fill the ledger: send ``--stored`` rows (1,000,000 by default), so it holds that many keys;
  2. fresh:  send a new file of ``--rows`` rows (new keys) into that ledger;
  3. resume: send another new file, kill -9 it after ``--kill-after`` seconds, then run the same
     command again and time that resumed run (its unknown rows are re-sent, their keys
     re-claimed).

Target: the resumed run sends at about the fresh rate (a resume once stalled ~10 s per
1,024-row chunk with many stored keys). Rates are rows settled per second of the run.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench.common import make_parquet
from bench.throughput import endpoint, schema_file, send_command, start_nginx, stop_nginx


def shifted(rows: int, offset: int, folder: Path) -> Path:
    """A file of new orders: the benchmark data with order ids moved by ``offset``."""
    table = pq.read_table(make_parquet(rows))
    ids = pc.add(table.column("order_id"), pa.scalar(offset, pa.int64()))
    path = folder / f"orders_{offset}_{rows}.parquet"
    pq.write_table(table.set_column(0, "order_id", ids), path)
    return path


def run(command: list[str]) -> tuple[float, dict[str, object]]:
    """Seconds and the JSON report of one send."""
    started = time.perf_counter()
    done = subprocess.run([*command, "--json"], capture_output=True, text=True)
    took = time.perf_counter() - started
    if done.returncode not in (0, 3):
        raise SystemExit(f"send failed ({done.returncode}): {done.stderr[-2000:]}")
    report: dict[str, object] = json.loads(done.stdout)
    return took, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stored", type=int, default=1_000_000)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--kill-after", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start_nginx(folder / "nginx")
        try:
            schema = schema_file(folder)
            ledger = folder / "ledger.sqlite"
            url = endpoint()

            def command(path: Path) -> list[str]:
                return send_command(path, schema, url, "--ledger", str(ledger))

            took, _ = run(command(make_parquet(args.stored)))
            print(f"filled the ledger with {args.stored:,} keys in {took:.0f} s")
            fresh_file = shifted(args.rows, 20_000_000, folder)
            fresh_s, fresh = run(command(fresh_file))
            resume_file = shifted(args.rows, 40_000_000, folder)
            first = subprocess.Popen(
                command(resume_file),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(args.kill_after)
            first.send_signal(signal.SIGKILL)
            first.wait()
            resume_s, resumed = run(command(resume_file))
        finally:
            stop_nginx(folder / "nginx")
    resume_info = resumed.get("resume") or {}
    assert isinstance(resume_info, dict)
    fresh_rate = int(str(fresh["sent"])) / fresh_s
    resume_rate = int(str(resumed["sent"])) / resume_s
    print(f"fresh : {fresh['sent']:,} rows in {fresh_s:.1f} s = {fresh_rate:,.0f} rows/s")
    print(
        f"resume: {resumed['sent']:,} rows ({resume_info.get('unknown', 0):,} unknown re-sent, "
        f"{resume_info.get('already_sent', 0):,} already sent) in {resume_s:.1f} s "
        f"= {resume_rate:,.0f} rows/s"
    )
    print(f"ratio resume / fresh: {resume_rate / fresh_rate:.2f}")


if __name__ == "__main__":
    main()
