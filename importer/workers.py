"""``--workers N``: sender processes behind the sender's batch seam.

The parent keeps what must be in one place: reading, mapping, leasing, settling, the report,
and the sender's rules (retries, strikes, the outage watchdog, ``--rate``), which see every
attempt's outcome as today. The :class:`WorkerPool` is one more
:class:`~importer.transport.BatchTransport` to that sender: it deals the requests it is
handed out to N processes, each running ``python -m importer.workers`` with its own event
loop and its own transport (aiohttp or curl, with ``--concurrency`` connections), and hands
their outcomes back in batches. A worker makes requests and nothing else: it imports neither
pandas nor pyarrow, and a message is a list of ``(url, number)`` out and ``(number, outcome)``
back (the parent keeps the rows).

A worker that dies (kill -9, OOM) is noticed by its pipe closing: every request it held is
reported "cut off, may have arrived", so the sender resends it within the printed duplicate
bound, and the others carry on. A worker dies with its parent (PR_SET_PDEATHSIG on Linux;
elsewhere when its pipe closes) and ignores SIGINT and SIGTERM: the parent, which owns the
ledger, decides how a run stops and tells them (drain, cancel, close).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any, Self

from yarl import URL

from importer import loop as loops
from importer.errors import DeliveryError, PermanentError, TransientError
from importer.options import SendOptions
from importer.transport import NOT_SENT, Outcomes, window

_HEADER = struct.Struct("!I")
# Requests and outcomes cross the pipes in batches: a message per request (a pickle, a
# write, a thread waking on the other side) cost more CPU than the request itself. A batch
# goes when it holds --concurrency items, or after this many seconds (each worker also
# holds as many ready to start, so it does not wait for them).
COALESCE = 0.002
# An outcome on the wire: None (2xx), "not-sent", or (permanent, reason, status, retry
# after, maybe delivered).
Wire = None | str | tuple[bool, str, int | None, float | None, bool]


def _write(fd: int, message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def _read(fd: int) -> Any:
    """The next message, or EOFError when the other end is gone."""
    size = _HEADER.unpack(_read_exactly(fd, _HEADER.size))[0]
    return pickle.loads(_read_exactly(fd, size))


def _read_exactly(fd: int, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def to_wire(err: DeliveryError | None) -> Wire:
    """An outcome as plain data, for a pipe or a cluster's wire."""
    if err is None:
        return None
    if err is NOT_SENT:
        return "not-sent"
    permanent = isinstance(err, PermanentError)
    return (permanent, err.reason, err.status, err.retry_after, err.maybe_delivered)


def from_wire(wire: Wire) -> DeliveryError | None:
    """The outcome :func:`to_wire` made."""
    if wire is None:
        return None
    if wire == "not-sent":
        return NOT_SENT
    assert isinstance(wire, tuple)
    permanent, reason, status, retry_after, maybe = wire
    if permanent:
        return PermanentError(reason, status=status, maybe_delivered=maybe)
    return TransientError(reason, status=status, retry_after=retry_after, maybe_delivered=maybe)


class _Worker:
    """The parent's end of one sender process."""

    def __init__(self, number: int, process: subprocess.Popen[bytes], to: int, back: int):
        self.number = number
        self.process = process
        self.to, self.back = to, back
        self.held: dict[int, Any] = {}  # request number -> the sender's token
        self.pending: list[tuple[str, int]] = []  # handed over, not yet written to it
        self.alive = True
        self.waiting: asyncio.Future[None] | None = None  # a cancel's or close's answer


def _start(number: int) -> _Worker:
    """One sender process, with a pipe each way (its fds passed on the command line)."""
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    process = subprocess.Popen(
        [sys.executable, "-m", "importer.workers", str(to_child_r), str(to_parent_w)],
        pass_fds=(to_child_r, to_parent_w),
        stdin=subprocess.DEVNULL,
    )
    os.close(to_child_r)
    os.close(to_parent_w)
    return _Worker(number, process, to_child_w, to_parent_r)


class WorkerPool:
    """N sender processes as one batch transport (see the module's doc)."""

    takes_text_urls = True

    def __init__(self, options: SendOptions) -> None:
        self.options = options
        self.count = options.workers
        # What the sender may hand over: each worker's window (--concurrency out and as many
        # ready to start), so no worker waits for the parent to refill.
        self.holds = self.count * window(options.concurrency)
        self._workers: list[_Worker] = []
        self._done: Callable[[Outcomes], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._number = 0
        self._timer: asyncio.TimerHandle | None = None  # the next coalesced flush
        self.lost: list[str] = []  # the senders lost during the run, for the report

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        worker_options = {
            name: getattr(self.options, name)
            for name in SendOptions.__dataclass_fields__
            if name != "workers"
        }
        for number in range(self.count):
            worker = await asyncio.to_thread(_start, number)
            _write(worker.to, ("start", worker_options, os.getpid()))
            self._workers.append(worker)
            threading.Thread(
                target=self._listen, args=(worker,), name=f"worker-{number}", daemon=True
            ).start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._flush_all()
        for worker in self._workers:
            if worker.alive:
                with contextlib.suppress(OSError):
                    _write(worker.to, ("close",))
        for worker in self._workers:
            with contextlib.suppress(OSError):
                os.close(worker.to)
            try:
                await asyncio.to_thread(worker.process.wait, 10)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                await asyncio.to_thread(worker.process.wait)

    # -- the sender's side ---------------------------------------------------------------------

    def send(self, requests: list[tuple[URL | str, Any]], done: Callable[[Outcomes], None]) -> None:
        """Deal the requests out to the live workers, fewest held first."""
        self._done = done
        live = [w for w in self._workers if w.alive]
        if not live:
            error = TransientError("no sender process left", maybe_delivered=False)
            done([(token, error) for _, token in requests])
            return
        live.sort(key=lambda w: len(w.held))
        share = -(-len(requests) // len(live))
        for i, worker in enumerate(live):
            part = requests[i * share : (i + 1) * share]
            if not part:
                break
            for url, token in part:
                self._number += 1
                worker.held[self._number] = token
                worker.pending.append((str(url), self._number))
            if len(worker.pending) >= self.options.concurrency:
                self._flush(worker)
        if self._timer is None and any(w.pending for w in live):
            assert self._loop is not None
            self._timer = self._loop.call_later(COALESCE, self._flush_all)

    def _flush(self, worker: _Worker) -> None:
        pending, worker.pending = worker.pending, []
        if pending:
            with contextlib.suppress(OSError):  # it died: its listener reports what it held
                _write(worker.to, ("send", pending))

    def _flush_all(self) -> None:
        self._timer = None
        for worker in self._workers:
            self._flush(worker)

    def drain(self) -> None:
        self._flush_all()
        for worker in self._workers:
            if worker.alive:
                with contextlib.suppress(OSError):
                    _write(worker.to, ("drain",))

    async def cancel(self) -> None:
        assert self._loop is not None
        self._flush_all()
        waiting = []
        for worker in self._workers:
            if worker.alive:
                worker.waiting = self._loop.create_future()
                waiting.append(worker.waiting)
                with contextlib.suppress(OSError):
                    _write(worker.to, ("cancel",))
        await asyncio.gather(*waiting)
        # What a worker still holds after its answer was cut off mid-request: the sender
        # counts those itself (they are in flight); forget them here.
        for worker in self._workers:
            worker.held.clear()

    # -- each worker's listener thread ----------------------------------------------------------

    def _listen(self, worker: _Worker) -> None:
        loop = self._loop
        assert loop is not None
        while True:
            try:
                message = _read(worker.back)
            except (EOFError, OSError):
                break
            with contextlib.suppress(RuntimeError):  # the loop is closed: the run is over
                loop.call_soon_threadsafe(self._arrived, worker, message)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._died, worker)

    def _arrived(self, worker: _Worker, message: Any) -> None:
        if message[0] == "done":
            held, outcomes = worker.held, []
            for number, wire in message[1]:
                token = held.pop(number, None)
                if token is not None:
                    outcomes.append((token, from_wire(wire)))
            if outcomes and self._done is not None:
                self._done(outcomes)
        elif message[0] == "cancelled" and worker.waiting and not worker.waiting.done():
            worker.waiting.set_result(None)

    def _died(self, worker: _Worker) -> None:
        """Its pipe closed: after a close that is the end; else the process died."""
        if not worker.alive:
            return
        worker.alive = False
        with contextlib.suppress(OSError):
            os.close(worker.back)
        if worker.waiting is not None and not worker.waiting.done():
            worker.waiting.set_result(None)
        held, worker.held = worker.held, {}
        if held and self._done is not None:  # (after a close it holds nothing)
            code = worker.process.poll()
            self.lost.append(f"sender process {worker.number + 1} (exit {code})")
            error = TransientError(
                f"sender process {worker.number + 1} died (exit {code}) with the request out"
            )
            self._done([(token, error) for token in held.values()])


# -- the worker process ----------------------------------------------------------------------


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this process when its parent dies, even by kill -9."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before that took effect
        os._exit(0)


def transport_of(options: SendOptions) -> Any:
    """A sender process's transport, in the batch shape (aiohttp's through Batched). Not
    sender.make_transport: the sender module imports pyarrow, which a worker never needs."""
    if options.transport == "curl":
        from importer.curl import CurlTransport

        return CurlTransport(options)
    from importer.transport import AiohttpTransport, Batched

    return Batched(AiohttpTransport(options), options.concurrency)


async def _serve(inbox: int, outbox: int, options: SendOptions) -> None:
    loop = asyncio.get_running_loop()
    transport = transport_of(options)
    out: list[tuple[int, Wire]] = []
    finished = loop.create_future()

    timer: list[asyncio.TimerHandle] = []

    def flush() -> None:
        for handle in timer:
            handle.cancel()
        timer.clear()
        batch = out[:]
        out.clear()
        if batch:
            _write(outbox, ("done", batch))

    def done(outcomes: Outcomes) -> None:
        out.extend((number, to_wire(err)) for number, err in outcomes)
        if len(out) >= options.concurrency:
            flush()
        elif not timer:
            timer.append(loop.call_later(COALESCE, flush))

    async def handle(message: Any) -> None:
        kind = message[0]
        if kind == "send":
            transport.send(message[1], done)
        elif kind == "drain":
            transport.drain()
        elif kind == "cancel":
            await transport.cancel()
            flush()
            _write(outbox, ("cancelled",))
        elif kind == "close" and not finished.done():
            finished.set_result(None)

    def listen() -> None:
        while True:
            try:
                message = _read(inbox)
            except (EOFError, OSError):
                message = ("close",)
            asyncio.run_coroutine_threadsafe(handle(message), loop)
            if message[0] == "close":
                return

    async with transport:
        threading.Thread(target=listen, name="inbox", daemon=True).start()
        await finished
        await transport.cancel()
        flush()


def main() -> None:
    """``python -m importer.workers INBOX_FD OUTBOX_FD``: one sender process."""
    inbox, outbox = int(sys.argv[1]), int(sys.argv[2])
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # the parent decides how a run stops
    kind, options, parent = _read(inbox)
    assert kind == "start"
    _die_with_parent(parent)
    loops.run(_serve(inbox, outbox, SendOptions(**options)))


if __name__ == "__main__":
    main()
