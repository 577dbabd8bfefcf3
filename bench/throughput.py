"""Delivery throughput against nginx on 127.0.0.1: ``.venv/bin/python -m bench.throughput``.

Installs nginx from apt if missing and starts it with ``location /event { return 200; }``
(access log off). Generates a Parquet file of ``--rows`` sales, then measures, interleaved
over ``--rounds`` rounds:

  (a) bare    a bare aiohttp GET loop over the pre-built URLs, same concurrency (the Python limit)
  (b) send    ``event-backfill send`` end to end (a subprocess), with the ledger and without
  (c) naive   a sequential ``requests`` loop over 10,000 rows (the quick script)

Targets: (b)/(a) >= 0.9, (b)/(c) >= 4, ledger on vs off costs <= 5%. ``--rss-rows`` also
measures the peak RSS of (b) on a large file (target <= 300 MB at 10M rows) and
``--resume-rows`` the time until a resumed run sends its first request when 90% of the
file is done (target <= 5 s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import OUT, SCHEMA, make_parquet

PORT = 18080
NGINX_CONF = """
worker_processes 1;
daemon on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log crit;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  server {{ listen 127.0.0.1:{port}; location /event {{ return 200; }} }}
}}
"""
ROOT = Path(__file__).resolve().parent.parent


def start_nginx(prefix: Path) -> None:
    """Install nginx if needed and start it on 127.0.0.1:PORT."""
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "nginx-light"], check=True, capture_output=True
        )
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, port=PORT))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    subprocess.run([nginx, "-c", str(conf), "-p", str(prefix)], check=True)


def stop_nginx(prefix: Path) -> None:
    """Stop the nginx started by start_nginx."""
    pid = prefix / "nginx.pid"
    if pid.exists():
        os.kill(int(pid.read_text()), 15)


def endpoint() -> str:
    return f"http://127.0.0.1:{PORT}/event"


def build_urls(path: Path) -> list[str]:
    """The URLs ``send`` makes for the file (built by the importer, untimed)."""
    from importer import api

    urls: list[str] = []
    for mapped in api.iter_events(path, schema=SCHEMA, endpoint=endpoint()):
        urls += mapped.events.column("url").to_pylist()
    return urls


def bare(urls: list[str], concurrency: int) -> float:
    """(a) events/s of a bare aiohttp loop: `concurrency` workers over a shared iterator."""

    async def main() -> float:
        it = iter(urls)
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker() -> None:
                for url in it:
                    async with session.get(url) as response:
                        await response.read()

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return len(urls) / (time.perf_counter() - started)

    return asyncio.run(main())


def send_command(path: Path, schema: Path, url: str, *options: str) -> list[str]:
    """``event-backfill send`` as a user runs it (quiet: the bar would cost time)."""
    command = [sys.executable, "-m", "importer", "send", str(path), "--schema", str(schema)]
    return [*command, "--endpoint", url, "--quiet", *options]


def send_cli(path: Path, schema: Path, concurrency: int, ledger: Path | None) -> tuple[float, int]:
    """(b) events/s of ``event-backfill send`` as a user runs it, and its peak RSS in KiB."""
    args = send_command(path, schema, endpoint(), "--concurrency", str(concurrency))
    args += ["--ledger", str(ledger)] if ledger else ["--no-ledger"]
    started = time.perf_counter()
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, _, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    out, err = process.communicate()
    if "pending 0" not in out:
        raise RuntimeError(f"send did not finish: {out}\n{err}")
    rows = int(out.split("sent", 1)[1].split()[0].replace(",", ""))
    return rows / elapsed, usage.ru_maxrss


def naive(urls: list[str]) -> float:
    """(c) events/s of a sequential requests loop over 10,000 URLs."""
    import requests

    sample = urls[:10_000]
    started = time.perf_counter()
    with requests.Session() as session:
        for url in sample:
            session.get(url).raise_for_status()
    return len(sample) / (time.perf_counter() - started)


def schema_file(folder: Path) -> Path:
    """The benchmark schema as TOML for the CLI."""
    lines = []
    for key, value in SCHEMA.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                lines.append(f"[[{key}]]")
                lines += [f"{k} = {_toml(v)}" for k, v in item.items()]
        elif isinstance(value, dict):
            lines.append(f"[{key}]")
            lines += [f"{k} = {_toml(v)}" for k, v in value.items()]
    lines.insert(0, f"dedupe_key = {_toml(SCHEMA['dedupe_key'])}")
    path = folder / "bench.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: Any) -> str:
    import json

    return json.dumps(value)


def resume_start(rows: int, schema: Path, folder: Path) -> float:
    """Seconds from starting a resumed send (90% done) to its first request arriving."""
    from importer import api
    from importer.collector import RunningCollector
    from importer.ledger import RunKey, SqliteLedger
    from importer.schema import load_schema
    from importer.source import open_source

    path = make_parquet(rows)
    ledger_path = folder / "resume.sqlite"
    done = rows * 9 // 10
    with RunningCollector() as collector:
        source, loaded = open_source(path), load_schema(schema)
        key = RunKey(
            source.key, source.name, source.fingerprint(), loaded.fingerprint(), collector.url
        )
        ledger = SqliteLedger(ledger_path, key, dedupe=True)
        with ledger._transaction():  # what 9M acknowledged rows leave behind
            ledger.db.executemany(
                "INSERT INTO dedupe_keys VALUES (?, ?, ?, ?)",
                ((collector.url, str(10_000_000 + i), ledger.run_id, i) for i in range(done)),
            )
            ledger.settled.add_ranges([(0, done)])
            ledger._write_ranges()
        ledger.close()
        started = time.time()
        process = subprocess.Popen(
            send_command(path, schema, collector.url, "--ledger", str(ledger_path)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while not collector.records and process.poll() is None:
            time.sleep(0.01)
        first = collector.records[0]["t"] - started if collector.records else float("nan")
        process.terminate()
        process.wait()
    del api
    return first


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--rss-rows", type=int, default=0, help="also measure peak RSS on this many rows"
    )
    parser.add_argument("--resume-rows", type=int, default=0, help="also time a 90%%-done resume")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-", dir=OUT if OUT.exists() else None))
    prefix = folder / "nginx"
    start_nginx(prefix)
    try:
        path = make_parquet(args.rows)
        schema = schema_file(folder)
        urls = build_urls(path)
        results: dict[str, list[float]] = {
            "bare": [],
            "send": [],
            "send-no-ledger": [],
            "naive": [],
        }
        for round_ in range(args.rounds):
            results["bare"].append(bare(urls, args.concurrency))
            ledger = folder / f"ledger-{round_}.sqlite"
            results["send"].append(send_cli(path, schema, args.concurrency, ledger)[0])
            results["send-no-ledger"].append(send_cli(path, schema, args.concurrency, None)[0])
            results["naive"].append(naive(urls))
            print(
                f"round {round_ + 1}: "
                + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in results.items()),
                flush=True,
            )
        med = {k: statistics.median(v) for k, v in results.items()}
        print(
            f"\n{args.rows:,} rows, concurrency {args.concurrency}, median of {args.rounds} rounds:"
        )
        for name, value in med.items():
            print(f"  {name:<15} {value:>10,.0f} events/s")
        print(f"  (b)/(a) send/bare            = {med['send'] / med['bare']:.2f}   (target >= 0.9)")
        print(f"  (b)/(c) send/naive           = {med['send'] / med['naive']:.1f}    (target >= 4)")
        cost = 1 - med["send"] / med["send-no-ledger"]
        print(f"  ledger cost (1 - on/off)     = {cost:.1%}  (target <= 5%)")
        if args.rss_rows:
            big = make_parquet(args.rss_rows)
            rate, rss = send_cli(big, schema, args.concurrency, folder / "rss.sqlite")
            print(
                f"  peak RSS of send on {args.rss_rows:,} rows: {rss / 1024:,.0f} MB "
                f"at {rate:,.0f} events/s (target <= 300 MB)"
            )
        if args.resume_rows:
            seconds = resume_start(args.resume_rows, schema, folder)
            print(
                f"  resume of {args.resume_rows:,} rows, 90% done: first request after "
                f"{seconds:.2f} s (target <= 5 s)"
            )
    finally:
        stop_nginx(prefix)
    print(f"self peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")


if __name__ == "__main__":
    main()
