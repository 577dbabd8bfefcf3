"""Delivery throughput against nginx on 127.0.0.1: ``.venv/bin/python -m bench.throughput``.

Installs nginx from apt if missing and starts it with ``location /event { return 200; }``
(access log off). Generates a Parquet file of ``--rows`` sales, then measures, interleaved
over ``--rounds`` rounds (each round runs every measurement once, in this order):

  (a) bare         a bare aiohttp GET loop over the pre-built URLs, same concurrency (the
                   Python limit of the default transport)
  (a') bare-curl   a bare pycurl ``CurlMulti`` loop over the same URLs: ``concurrency`` easy
                   handles reused, add / perform / info_read / select (the ceiling for
                   Python driving libcurl)
  (b) send         ``event-backfill send`` end to end (a subprocess), with the ledger and
                   without (send-no-ledger)
  (b') send-curl   the same with ``--transport curl``, with the ledger and without
  (a2) bare-2proc  the bare aiohttp loop in 2 processes, each over half of the URLs at the
                   same concurrency, timed from a common start (after each has loaded its
                   URLs and imported aiohttp) to the end of the last
  (d) send-workers2
                   ``event-backfill send --workers 2`` end to end, with the ledger
  (d') send-curl-workers2
                   the same with ``--transport curl``
  (e) send-dask2   ``event-backfill send --dask ADDRESS`` against a local cluster of 2 worker
                   processes (1 thread each), started once by the bench (not timed)
  (c) naive        a sequential ``requests`` loop over 10,000 rows (the quick script)
  (w) wrk          ``wrk -t1 -c{concurrency} -d5s`` on one URL: the server's ceiling (installed
                   from apt when missing and apt-get exists, else skipped)

``--only`` picks groups of these (aiohttp: a and b; curl: a' and b'; workers: a2, d and d';
dask: e; naive; wrk), all by default. Every measurement and ratio is printed per round,
then the medians.

Targets: (b)/(a) >= 0.9, (b)/(c) >= 4, ledger on vs off costs <= 5% (aiohttp);
(b')/(a') >= 0.6, (b')/(b) >= 3, ledger cost at the curl rate <= 5%; (d)/(a) >= 1.6,
(d)/(a2) >= 0.9 (workers); (e)/(d) >= 0.8 (dask). Reported without a target: (a')/(a),
(a2)/(a), (d')/(b'), (e)/(a), and (a') and (b') against wrk.

``--rss-rows`` also measures the peak RSS of (b) on a large file (target <= 300 MB at 10M
rows), and of (d): the parent's and each worker's peaks summed (target <= 300 MB + 80 MB per
worker). ``--resume-rows`` times how long a resumed run takes to send its first request when
90% of the file is done (target <= 5 s).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
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


def start_dask(folder: Path, workers: int = 2) -> tuple[str, list[subprocess.Popen[bytes]]]:
    """A local Dask cluster as a user starts one: ``dask scheduler`` and ``dask worker``
    (``workers`` processes of 1 thread), each a process of its own; its address once every
    worker has joined. Its workers run uvloop (as the README advises, and as ``--workers``
    processes do) when it is installed."""
    import importlib.util

    from distributed import Client

    env = dict(os.environ)
    if importlib.util.find_spec("uvloop") is not None:
        env["DASK_DISTRIBUTED__ADMIN__EVENT_LOOP"] = "uvloop"
    dask = str(Path(sys.executable).parent / "dask")
    log = (folder / "dask.log").open("ab")
    port = 18000 + os.getpid() % 1000
    address = f"tcp://127.0.0.1:{port}"
    scheduler = [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port)]
    worker = [dask, "worker", address, "--nworkers", str(workers), "--nthreads", "1"]
    processes = [
        subprocess.Popen([*scheduler, "--no-dashboard"], stdout=log, stderr=log, env=env),
        subprocess.Popen([*worker, "--no-dashboard"], stdout=log, stderr=log, env=env),
    ]
    with Client(address, timeout=30) as client:
        client.wait_for_workers(workers, timeout=60)
    return address, processes


def stop_dask(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in reversed(processes):
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


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
    started, finished = asyncio.run(_bare_loop(urls, concurrency))
    return len(urls) / (finished - started)


async def _bare_loop(
    urls: list[str], concurrency: int, ready: Callable[[], None] | None = None
) -> tuple[float, float]:
    """The bare aiohttp loop's start and end (``time.perf_counter``); ``ready`` is called
    with the session open, just before the start (it may block until a common start)."""
    it = iter(urls)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for url in it:
                async with session.get(url) as response:
                    await response.read()

        if ready is not None:
            ready()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return started, time.perf_counter()


def bare_processes(urls: list[str], concurrency: int, processes: int = 2) -> float:
    """(a2) events/s of the bare aiohttp loop in `processes` processes, each over its share
    of the URLs: all URLs / the wall time from a common start to the end of the last.

    Each process (spawned: a fresh interpreter) gets its URLs, imports aiohttp and opens its
    session before it says it is ready; the clock starts when all are and are told to go."""
    context = multiprocessing.get_context("spawn")
    share = -(-len(urls) // processes)
    pipes, children = [], []
    for i in range(processes):
        ours, theirs = context.Pipe()
        child = context.Process(target=_bare_child, args=(theirs, concurrency), daemon=True)
        child.start()
        theirs.close()
        ours.send(urls[i * share : (i + 1) * share])
        pipes.append(ours)
        children.append(child)
    try:
        for pipe in pipes:
            if pipe.recv() != "ready":
                raise RuntimeError("bare-2proc: a process did not get ready")
        started = time.perf_counter()
        for pipe in pipes:
            pipe.send("go")
        finished = max(pipe.recv() for pipe in pipes)  # perf_counter is system-wide
    finally:
        for child in children:
            child.join(10)
            if child.is_alive():
                child.kill()
                child.join()
        for pipe in pipes:
            pipe.close()
    return len(urls) / (finished - started)


def _bare_child(pipe: Any, concurrency: int) -> None:
    """One process of (a2): its URLs in, "ready", wait for "go", the loop, its end out."""
    urls = pipe.recv()

    def ready() -> None:
        pipe.send("ready")
        if pipe.recv() != "go":
            raise RuntimeError("bare-2proc: expected go")

    _, finished = asyncio.run(_bare_loop(urls, concurrency, ready))
    pipe.send(finished)
    pipe.close()


def send_command(path: Path, schema: Path, url: str, *options: str) -> list[str]:
    """``event-backfill send`` as a user runs it (quiet: the bar would cost time)."""
    command = [sys.executable, "-m", "importer", "send", str(path), "--schema", str(schema)]
    return [*command, "--endpoint", url, "--quiet", *options]


def bare_curl(urls: list[str], concurrency: int) -> float:
    """(a') events/s of a bare pycurl multi loop: `concurrency` easy handles reused."""
    import pycurl

    multi = pycurl.CurlMulti()
    multi.setopt(pycurl.M_MAX_TOTAL_CONNECTIONS, concurrency)
    free = [_bare_handle(pycurl) for _ in range(concurrency)]
    handles = list(free)
    total, added, finished, bad = len(urls), 0, 0, 0
    started = time.perf_counter()
    while finished < total:
        while free and added < total:
            c = free.pop()
            c.setopt(pycurl.URL, urls[added])
            multi.add_handle(c)
            added += 1
        while multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass
        while True:
            queued, succeeded, failed = multi.info_read()
            for c in succeeded:
                bad += c.getinfo(pycurl.RESPONSE_CODE) != 200
            bad += len(failed)
            for c in [*succeeded, *(f[0] for f in failed)]:
                multi.remove_handle(c)
                free.append(c)
                finished += 1
            if not queued:
                break
        if finished < total:
            multi.select(1.0)
    elapsed = time.perf_counter() - started
    for c in handles:
        c.close()
    multi.close()
    if bad:
        raise RuntimeError(f"bare-curl: {bad:,} of {total:,} requests did not get a 200")
    return total / elapsed


def _bare_handle(pycurl: Any) -> Any:
    """An easy handle with only what a bare loop needs: no signals, the body dropped."""
    c = pycurl.Curl()
    c.setopt(pycurl.NOSIGNAL, 1)
    c.setopt(pycurl.WRITEFUNCTION, len)
    return c


def send_cli(
    path: Path, schema: Path, concurrency: int, ledger: Path | None, *options: str
) -> tuple[float, int]:
    """(b) events/s of ``event-backfill send`` as a user runs it, and its peak RSS in KiB.

    ``options`` are more command-line options (``--transport curl`` for (b'))."""
    args = send_command(path, schema, endpoint(), "--concurrency", str(concurrency), *options)
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


def send_tree_rss(
    path: Path, schema: Path, concurrency: int, ledger: Path, *options: str
) -> tuple[float, int, int]:
    """events/s of ``event-backfill send OPTIONS``, the peak RSS (KiB) of the parent, and
    that of the parent and its children (``--workers``) summed: each process's high-water
    mark (VmHWM), read from /proc every 0.2 s while it lives."""
    args = send_command(path, schema, endpoint(), "--concurrency", str(concurrency), *options)
    args += ["--ledger", str(ledger)]
    peaks: dict[int, int] = {}
    started = time.perf_counter()
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while process.poll() is None:
        for pid in [process.pid, *_children(process.pid)]:
            peaks[pid] = max(peaks.get(pid, 0), _high_water(pid))
        time.sleep(0.2)
    elapsed = time.perf_counter() - started
    out, err = process.communicate()
    if "pending 0" not in out:
        raise RuntimeError(f"send did not finish: {out}\n{err}")
    rows = int(out.split("sent", 1)[1].split()[0].replace(",", ""))
    return rows / elapsed, peaks.get(process.pid, 0), sum(peaks.values())


def _children(parent: int) -> list[int]:
    try:
        tasks = Path(f"/proc/{parent}/task").iterdir()
        return [int(c) for t in tasks for c in (t / "children").read_text().split()]
    except OSError:
        return []


def _high_water(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def naive(urls: list[str]) -> float:
    """(c) events/s of a sequential requests loop over 10,000 URLs."""
    import requests

    sample = urls[:10_000]
    started = time.perf_counter()
    with requests.Session() as session:
        for url in sample:
            session.get(url).raise_for_status()
    return len(sample) / (time.perf_counter() - started)


def find_wrk() -> str | None:
    """wrk's path: installed from apt when missing and apt-get exists, else None."""
    found = shutil.which("wrk")
    if found or shutil.which("apt-get") is None:
        return found
    try:
        subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"wrk: not installed ({exc}); skipped", flush=True)
        return None
    return shutil.which("wrk")


def wrk(program: str, url: str, concurrency: int, seconds: int = 5) -> float:
    """(w) requests/s of ``wrk`` on one URL: what nginx answers when Python is not the limit."""
    out = subprocess.run(
        [program, "-t1", f"-c{concurrency}", f"-d{seconds}s", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    errors = [line for line in out.splitlines() if "Non-2xx" in line or "Socket errors" in line]
    if errors:
        raise RuntimeError(f"wrk: {'; '.join(errors)}")
    return float(out.split("Requests/sec:", 1)[1].split()[0])


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


GROUPS = {
    "aiohttp": ("bare", "send", "send-no-ledger"),
    "curl": ("bare-curl", "send-curl", "send-curl-no-ledger"),
    "workers": ("bare-2proc", "send-workers2", "send-curl-workers2"),
    "dask": ("send-dask2",),
    "naive": ("naive",),
    "wrk": ("wrk",),
}
ORDER = (
    "bare",
    "bare-curl",
    "send",
    "send-no-ledger",
    "send-curl",
    "send-curl-no-ledger",
    "bare-2proc",
    "send-workers2",
    "send-curl-workers2",
    "send-dask2",
    "naive",
    "wrk",
)


@dataclass(frozen=True)
class Ratio:
    """``top / bottom`` of two measurements (``1 - top / bottom`` for a cost), its target."""

    tag: str
    top: str
    bottom: str
    target: str = ""
    cost: bool = False

    @property
    def name(self) -> str:
        return f"ledger cost {self.top}" if self.cost else f"{self.top}/{self.bottom}"

    def of(self, values: dict[str, float]) -> float | None:
        """The ratio, or None when either side was not measured."""
        if self.top not in values or self.bottom not in values:
            return None
        ratio = values[self.top] / values[self.bottom]
        return 1 - ratio if self.cost else ratio

    def show(self, value: float) -> str:
        return f"{value:.1%}" if self.cost else f"{value:.2f}"


RATIOS = (
    Ratio("(b)/(a)", "send", "bare", ">= 0.9"),
    Ratio("(b)/(c)", "send", "naive", ">= 4"),
    Ratio("1-on/off", "send", "send-no-ledger", "<= 5%", cost=True),
    Ratio("(b')/(a')", "send-curl", "bare-curl", ">= 0.6"),
    Ratio("(b')/(b)", "send-curl", "send", ">= 3"),
    Ratio("1-on/off", "send-curl", "send-curl-no-ledger", "<= 5%", cost=True),
    Ratio("(d)/(a)", "send-workers2", "bare", ">= 1.6"),
    Ratio("(d)/(a2)", "send-workers2", "bare-2proc", ">= 0.9"),
    Ratio("(e)/(d)", "send-dask2", "send-workers2", ">= 0.8"),
    Ratio("(e)/(a)", "send-dask2", "bare"),
    Ratio("(a')/(a)", "bare-curl", "bare"),
    Ratio("(a2)/(a)", "bare-2proc", "bare"),
    Ratio("(d')/(b')", "send-curl-workers2", "send-curl"),
    Ratio("(a')/(w)", "bare-curl", "wrk"),
    Ratio("(b')/(w)", "send-curl", "wrk"),
)


def measurements(
    args: argparse.Namespace,
    path: Path,
    schema: Path,
    folder: Path,
    urls: list[str],
    dask: str | None = None,
) -> dict[str, Callable[[int], float]]:
    """What ``--only`` asks for, in ORDER: name -> events/s in round n."""
    c = args.concurrency
    curl = ("--transport", "curl")
    two = ("--workers", "2")
    every: dict[str, Callable[[int], float]] = {
        "bare": lambda n: bare(urls, c),
        "bare-curl": lambda n: bare_curl(urls, c),
        "send": lambda n: send_cli(path, schema, c, folder / f"ledger-{n}.sqlite")[0],
        "send-no-ledger": lambda n: send_cli(path, schema, c, None)[0],
        "send-curl": lambda n: send_cli(path, schema, c, folder / f"curl-{n}.sqlite", *curl)[0],
        "send-curl-no-ledger": lambda n: send_cli(path, schema, c, None, *curl)[0],
        "bare-2proc": lambda n: bare_processes(urls, c),
        "send-workers2": lambda n: send_cli(path, schema, c, folder / f"w2-{n}.sqlite", *two)[0],
        "send-curl-workers2": lambda n: send_cli(
            path, schema, c, folder / f"curl-w2-{n}.sqlite", *two, *curl
        )[0],
        "naive": lambda n: naive(urls),
    }
    if dask is not None:
        every["send-dask2"] = lambda n: send_cli(
            path, schema, c, folder / f"dask-{n}.sqlite", "--dask", dask
        )[0]
    if "wrk" in args.only and (program := find_wrk()):
        every["wrk"] = lambda n: wrk(program, urls[0], c)
    wanted = {name for group in args.only for name in GROUPS[group]}
    return {name: every[name] for name in ORDER if name in wanted and name in every}


def only(text: str) -> list[str]:
    """``--only``'s comma-separated groups."""
    groups = [group.strip() for group in text.split(",") if group.strip()]
    unknown = [group for group in groups if group not in GROUPS]
    if unknown or not groups:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(GROUPS)} (got {text!r})")
    return groups


def print_round(n: int, values: dict[str, float]) -> None:
    """One round's measurements and the ratios they give."""
    print(f"round {n}: " + ", ".join(f"{k} {v:,.0f}/s" for k, v in values.items()))
    shown = [(r, r.of(values)) for r in RATIOS]
    print("  " + ", ".join(f"{r.name} {r.show(v)}" for r, v in shown if v is not None), flush=True)


def print_summary(args: argparse.Namespace, results: dict[str, list[float]]) -> None:
    """Medians of every measurement, then every ratio: per round, their median and the
    ratio of the medians, beside its target."""
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"\n{args.rows:,} rows, concurrency {args.concurrency}, median of {args.rounds} rounds:")
    for name, value in med.items():
        each = " ".join(f"{v:,.0f}" for v in results[name])
        print(f"  {name:<20} {value:>10,.0f} events/s   (rounds: {each})")
    print(f"\n  {'ratio':<40} {'rounds':<22} {'median':>7} {'of med.':>7}  target")
    rounds = [{k: v[i] for k, v in results.items()} for i in range(args.rounds)]
    for ratio in RATIOS:
        overall = ratio.of(med)
        if overall is None:
            continue
        each = [ratio.of(values) or 0.0 for values in rounds]
        shown = " ".join(ratio.show(v) for v in each)
        line = (
            f"  {ratio.tag:<10} {ratio.name:<29} {shown:<22} "
            f"{ratio.show(statistics.median(each)):>7} {ratio.show(overall):>7}  {ratio.target}"
        )
        print(line.rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--only",
        type=only,
        default=list(GROUPS),
        help=f"measure only these comma-separated groups of {', '.join(GROUPS)} (default all)",
    )
    parser.add_argument(
        "--rss-rows", type=int, default=0, help="also measure peak RSS on this many rows"
    )
    parser.add_argument(
        "--rss-transport",
        choices=("aiohttp", "curl"),
        default="aiohttp",
        help="the transport of the --rss-rows sends (curl: a 10M-row file in minutes)",
    )
    parser.add_argument("--resume-rows", type=int, default=0, help="also time a 90%%-done resume")
    args = parser.parse_args()
    # The project's own bytecode, as any install has it: with PYTHONDONTWRITEBYTECODE set (as
    # on this machine) an editable checkout never gets .pyc files, and every `send` would
    # compile ~50 modules at start (~0.5 s, charged to the send, not to the bare loops).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "importer")], check=True)
    folder = Path(tempfile.mkdtemp(prefix="bench-", dir=OUT if OUT.exists() else None))
    prefix = folder / "nginx"
    start_nginx(prefix)
    cluster: list[subprocess.Popen[bytes]] = []
    try:
        path = make_parquet(args.rows)
        schema = schema_file(folder)
        urls = build_urls(path)
        dask, cluster = start_dask(folder) if "dask" in args.only else (None, [])
        measures = measurements(args, path, schema, folder, urls, dask)
        results: dict[str, list[float]] = {name: [] for name in measures}
        for round_ in range(args.rounds):
            for name, measure in measures.items():
                results[name].append(measure(round_))
            print_round(round_ + 1, {k: v[-1] for k, v in results.items()})
        print_summary(args, results)
        if args.rss_rows:
            big = make_parquet(args.rss_rows)
            transport = ("--transport", args.rss_transport)
            # VmHWM from /proc, not wait4's ru_maxrss: that counts the pages the child shared
            # with this process (holding the big file's table) before it exec'd.
            rate, rss, _ = send_tree_rss(
                big, schema, args.concurrency, folder / "rss.sqlite", *transport
            )
            print(
                f"  peak RSS of send ({args.rss_transport}) on {args.rss_rows:,} rows: "
                f"{rss / 1024:,.0f} MB "
                f"at {rate:,.0f} events/s (target <= 300 MB)"
            )
            w2 = (*transport, "--workers", "2")
            rate, parent, tree = send_tree_rss(
                big, schema, args.concurrency, folder / "rss-w2.sqlite", *w2
            )
            print(
                f"  peak RSS of send --workers 2 on {args.rss_rows:,} rows: parent "
                f"{parent / 1024:,.0f} MB, with its 2 workers {tree / 1024:,.0f} MB at "
                f"{rate:,.0f} events/s (target <= 300 MB + 2 x 80 MB = 460 MB)"
            )
        if args.resume_rows:
            seconds = resume_start(args.resume_rows, schema, folder)
            print(
                f"  resume of {args.resume_rows:,} rows, 90% done: first request after "
                f"{seconds:.2f} s (target <= 5 s)"
            )
    finally:
        stop_dask(cluster)
        stop_nginx(prefix)
    print(f"self peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")


if __name__ == "__main__":
    main()
