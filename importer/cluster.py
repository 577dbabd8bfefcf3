"""``--dask ADDRESS``: the sender side on an existing Dask cluster.

The shape is ``--workers``' (see :mod:`importer.workers`): this process keeps reading,
mapping, leasing, settling, the report and every rule of the sender, and the
:class:`DaskPool` is one more :class:`~importer.transport.BatchTransport` to that sender. It
places one :class:`RemoteSender` actor on each Dask worker. An actor holds a transport
(aiohttp or curl, with ``--concurrency`` connections) in its worker's event loop; requests go
to it as ``(url, number)`` batches and outcomes come back as ``(number, outcome)`` by long
polling, so nothing but URLs crosses the wire (the rows stay here, with the ledger).

A Dask worker that is lost (kill -9, OOM, a network split) is noticed by a call to its actor
failing or not answering: every request it held is reported "cut off, may have arrived", so
the sender resends it under the printed duplicate bound, and the other actors carry on.
Dask never re-runs a request by itself:

* an actor is stateful and pinned to its worker: a call to a lost actor fails, it is not
  re-sent to another worker;
* a batch carries a number, and an actor ignores a batch it has already taken, so a call
  Dask's comms retry cannot send twice;
* outcomes are numbered and stay on the actor until the next poll acknowledges them, so a
  poll answer lost on the way costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import uuid
from collections.abc import Callable
from typing import Any, Self

from yarl import URL

from importer.errors import TransientError, UsageError
from importer.options import SendOptions
from importer.transport import NOT_SENT, Outcomes, window
from importer.workers import Wire, from_wire, to_wire, transport_of

# How long an actor holds a poll open when it has nothing to report, and how long past that
# an answer may take before its worker counts as lost. A Dask worker answers a call within
# milliseconds unless it is gone (or so overloaded that it cannot be trusted with requests).
POLL_WAIT = 0.5
CALL_TIMEOUT = 30.0
# After the first outcome is ready, how long an actor waits for more before it answers a poll.
COALESCE = 0.002
# An actor that hears nothing from its client for this long (killed with -9, cut off) cuts
# off what it holds and closes: it never sends on for a run that is gone. Its client polls
# every POLL_WAIT seconds at least.
ORPHANED_AFTER = CALL_TIMEOUT


def scheduler_address(dask: Any) -> str:
    """The scheduler address of ``dask``: an address, a ``distributed.Client`` or a cluster
    object (``LocalCluster``...)."""
    if isinstance(dask, str):
        return dask
    address = getattr(dask, "scheduler_address", None)  # a cluster object
    if isinstance(address, str):
        return address
    scheduler = getattr(dask, "scheduler", None)  # a Client
    address = getattr(scheduler, "address", None)
    if isinstance(address, str):
        return address
    raise UsageError(
        f"dask must be a scheduler address (tcp://host:8786), a distributed.Client or a "
        f"cluster object, got {type(dask).__name__}"
    )


class RemoteSender:
    """A Dask actor: one transport in its worker's event loop, requests in, outcomes out.

    Every method is a coroutine, so Dask runs it on the worker's event loop, where the
    transport lives, not in its actor thread.
    """

    def __init__(self, options: dict[str, Any]) -> None:
        self._options = SendOptions(**options)
        self._transport: Any = None
        self._ready: asyncio.Event | None = None
        self._out: list[tuple[int, Wire]] = []
        self._base = 0  # the sequence number of _out[0]
        self._last_batch = -1
        self._heard = 0.0  # the loop's time of the client's last call
        self._watch: asyncio.Task[None] | None = None

    async def open(self) -> int:
        """Open the transport (once); returns this worker's process id."""
        if self._transport is None:
            self._ready = asyncio.Event()
            transport = transport_of(self._options)
            await transport.__aenter__()
            self._transport = transport
            self._heard = asyncio.get_running_loop().time()
            self._watch = asyncio.create_task(self._watch_client())
        return os.getpid()

    async def _watch_client(self) -> None:
        loop = asyncio.get_running_loop()
        while self._transport is not None:
            await asyncio.sleep(1.0)
            if loop.time() - self._heard > ORPHANED_AFTER:
                await self.close()

    async def send(self, batch: int, requests: list[tuple[str, int]], drain: bool) -> None:
        """Start the requests of batch number ``batch`` (batches come in order, one call at a
        time); a batch taken already is ignored. ``drain``: start nothing after these."""
        self._heard = asyncio.get_running_loop().time()
        if self._transport is None:  # closed, orphaned: the client counts its requests lost
            raise RuntimeError("this sender has closed")
        if batch <= self._last_batch:
            return
        self._last_batch = batch
        if requests:
            self._transport.send(requests, self._done)
        if drain:
            self._transport.drain()

    def _done(self, outcomes: Outcomes) -> None:
        self._out.extend((number, to_wire(err)) for number, err in outcomes)
        assert self._ready is not None
        self._ready.set()

    async def collect(self, ack: int, wait: float) -> bytes:
        """The outcomes from sequence number ``ack`` on, as ``(first number, outcomes)``
        pickled; those before ``ack`` have arrived and are forgotten. Waits up to ``wait``
        seconds for one when there is none."""
        assert self._ready is not None
        self._heard = asyncio.get_running_loop().time()
        drop = min(max(ack - self._base, 0), len(self._out))
        del self._out[:drop]
        self._base += drop
        if not self._out and wait > 0:
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._ready.wait()
            if self._out:
                await asyncio.sleep(COALESCE)
        return self._outcomes()

    async def cancel(self) -> bytes:
        """Cut off every request out; returns every outcome not yet acknowledged."""
        if self._transport is not None:
            await self._transport.cancel()
        return self._outcomes()

    def _outcomes(self) -> bytes:
        # Pickled here, not by Dask: its serialization of a list of tuples costs ~10x more.
        return pickle.dumps((self._base, self._out), protocol=pickle.HIGHEST_PROTOCOL)

    async def close(self) -> None:
        """Close the transport; the actor is released by its client afterwards."""
        transport, self._transport = self._transport, None
        if self._watch is not None and self._watch is not asyncio.current_task():
            self._watch.cancel()
        if transport is not None:
            await transport.cancel()
            await transport.__aexit__(None, None, None)


class _Remote:
    """This process's end of one actor."""

    def __init__(self, number: int, worker: str, key: str) -> None:
        self.number = number
        self.worker = worker  # the Dask worker's address
        self.key = key  # the actor's
        self.held: dict[int, Any] = {}  # request number -> the sender's token
        self.pending: list[tuple[str, int]] = []  # handed over, not yet sent to the actor
        self.drain = False
        self.wake = asyncio.Event()
        self.batch = 0
        self.ack = 0  # the next outcome's sequence number
        self.alive = True
        self.tasks: list[asyncio.Task[None]] = []


class DaskPool:
    """One :class:`RemoteSender` per Dask worker, as one batch transport."""

    takes_text_urls = True

    def __init__(self, options: SendOptions) -> None:
        assert options.dask is not None
        self.options = options
        self.address = options.dask
        self.holds = 0  # set when the cluster's workers are known
        self._client: Any = None
        self._remotes: list[_Remote] = []
        self._futures: list[Any] = []
        self._done: Callable[[Outcomes], None] | None = None
        self._number = 0
        self.lost: list[str] = []  # the senders lost during the run, for the report

    async def __aenter__(self) -> Self:
        try:
            from distributed import Client
        except ImportError:
            raise UsageError(
                "--dask needs distributed, which is not installed: "
                "pip install 'event-backfill[dask]'"
            ) from None
        timeout = self.options.connect_timeout
        try:
            self._client = await Client(  # type: ignore[no-untyped-call]
                self.address, asynchronous=True, timeout=timeout, set_as_default=False
            )
        except (OSError, TimeoutError, ValueError) as exc:
            raise UsageError(
                f"cannot reach the Dask scheduler at {self.address}: {exc}; check the "
                "address (tcp://host:8786) and that the scheduler runs"
            ) from None
        try:
            await self._place()
        except BaseException:
            await self._client.close()
            raise
        return self

    async def _place(self) -> None:
        identity = await self._client.scheduler.identity()  # every worker
        workers = sorted(identity["workers"])
        if not workers:
            raise UsageError(f"the Dask cluster at {self.address} has no workers; start some")
        options = {
            name: getattr(self.options, name)
            for name in SendOptions.__dataclass_fields__
            if name not in ("workers", "dask")
        }
        run = uuid.uuid4().hex[:8]
        futures = [
            self._client.submit(
                RemoteSender,
                options,
                actor=True,
                workers=[worker],
                pure=False,
                key=f"event-backfill-sender-{run}-{number}",
            )
            for number, worker in enumerate(workers)
        ]
        self._futures = futures
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                await self._client.gather(futures)
        except TimeoutError:
            raise UsageError(
                f"the Dask cluster at {self.address} did not start its senders within "
                f"{CALL_TIMEOUT:g} s"
            ) from None
        remotes = [
            _Remote(number, worker, future.key)
            for number, (worker, future) in enumerate(zip(workers, futures, strict=True))
        ]
        opened = await asyncio.gather(
            *(self._call(remote, "open", within=CALL_TIMEOUT) for remote in remotes),
            return_exceptions=True,
        )
        for remote, answer in zip(remotes, opened, strict=True):
            if isinstance(answer, BaseException):
                raise UsageError(
                    f"the Dask worker {remote.worker} could not start a sender: {answer}"
                )
        self._remotes = remotes
        self.holds = len(self._remotes) * window(self.options.concurrency)
        for remote in self._remotes:
            remote.tasks = [
                asyncio.create_task(self._feed(remote)),
                asyncio.create_task(self._poll(remote)),
            ]

    async def __aexit__(self, *exc_info: object) -> None:
        for remote in self._remotes:
            for task in remote.tasks:
                task.cancel()
            await asyncio.gather(*remote.tasks, return_exceptions=True)
        closing = [
            self._call(remote, "close", within=CALL_TIMEOUT)
            for remote in self._remotes
            if remote.alive
        ]
        await asyncio.gather(*closing, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._client.cancel(self._futures)
        await self._client.close()

    async def _call(self, remote: _Remote, function: str, *args: Any, within: float) -> Any:
        """Call the actor's method straight on its worker, as Dask's Actor proxy does, but
        without its retry: a failure to answer in ``within`` seconds is OSError (the worker
        counts as lost), never a second call. Arguments go as plain data in Dask's message
        (its per-object serialization of a list of tuples cost the parent more CPU than the
        requests did)."""
        try:
            async with asyncio.timeout(within):
                answer = await self._client.rpc(remote.worker).actor_execute(
                    function=function,
                    actor=remote.key,
                    args=list(args),  # plain data: msgpack carries it, no pickling
                    kwargs={},
                )
        except TimeoutError:
            raise OSError(f"no answer in {within:g} s") from None
        except (OSError, KeyError) as exc:  # the comm closed; the actor is gone
            raise OSError(str(exc) or type(exc).__name__) from None
        if answer["status"] != "OK":
            raise OSError(f"the sender failed: {answer.get('exception')!r}")
        return answer["result"]

    # -- the sender's side ---------------------------------------------------------------------

    def send(self, requests: list[tuple[URL | str, Any]], done: Callable[[Outcomes], None]) -> None:
        """Deal the requests out to the live actors, fewest held first."""
        self._done = done
        live = [r for r in self._remotes if r.alive]
        if not live:
            error = TransientError("no Dask worker left", maybe_delivered=False)
            done([(token, error) for _, token in requests])
            return
        live.sort(key=lambda r: len(r.held))
        share = -(-len(requests) // len(live))
        for i, remote in enumerate(live):
            part = requests[i * share : (i + 1) * share]
            if not part:
                break
            for url, token in part:
                self._number += 1
                remote.held[self._number] = token
                remote.pending.append((str(url), self._number))
            remote.wake.set()

    def drain(self) -> None:
        for remote in self._remotes:
            remote.drain = True
            remote.wake.set()

    async def cancel(self) -> None:
        """Cut every actor off; report what each sent back, then forget what it held."""
        live = [r for r in self._remotes if r.alive]
        for remote in live:
            for task in remote.tasks:
                task.cancel()
        await asyncio.gather(*(t for r in live for t in r.tasks), return_exceptions=True)
        answers = await asyncio.gather(
            *(self._call(r, "cancel", within=CALL_TIMEOUT) for r in live), return_exceptions=True
        )
        for remote, answer in zip(live, answers, strict=True):
            if isinstance(answer, BaseException):
                self._lost(remote, answer)
                continue
            self._arrived(remote, *pickle.loads(answer))
            # Never handed to the actor: certainly not sent.
            unsent: Outcomes = [
                (remote.held.pop(n), NOT_SENT) for _, n in remote.pending if n in remote.held
            ]
            if unsent and self._done is not None:
                self._done(unsent)
        for remote in self._remotes:
            # Cut off mid-request: the sender counts those itself (they are in flight).
            remote.held.clear()
            remote.pending.clear()

    # -- each actor's two tasks ----------------------------------------------------------------

    async def _feed(self, remote: _Remote) -> None:
        """Hand the actor its pending requests, one call at a time (batches grow while a
        call is out, so the calls never outnumber what the actor can take)."""
        while remote.alive:
            await remote.wake.wait()
            remote.wake.clear()
            pending, remote.pending = remote.pending, []
            drain = remote.drain
            if not pending and not drain:
                continue
            remote.batch += 1
            try:
                await self._call(
                    remote, "send", remote.batch, pending, drain, within=CALL_TIMEOUT
                )
            except OSError as exc:
                self._lost(remote, exc)

    async def _poll(self, remote: _Remote) -> None:
        while remote.alive:
            try:
                answer = await self._call(
                    remote, "collect", remote.ack, POLL_WAIT, within=POLL_WAIT + CALL_TIMEOUT
                )
            except OSError as exc:
                self._lost(remote, exc)
                return
            self._arrived(remote, *pickle.loads(answer))

    def _arrived(self, remote: _Remote, first: int, wires: list[tuple[int, Wire]]) -> None:
        skip = max(remote.ack - first, 0)  # already settled from an earlier answer
        outcomes = []
        for number, wire in wires[skip:]:
            token = remote.held.pop(number, None)
            if token is not None:
                outcomes.append((token, from_wire(wire)))
        remote.ack = max(remote.ack, first + len(wires))
        if outcomes and self._done is not None:
            self._done(outcomes)

    def _lost(self, remote: _Remote, exc: BaseException) -> None:
        """Its worker stopped answering: what the actor held may have been sent."""
        if not remote.alive:
            return
        remote.alive = False
        remote.wake.set()
        current = asyncio.current_task()
        for task in remote.tasks:
            if task is not current:
                task.cancel()
        held, remote.held = remote.held, {}
        # Never handed to the actor: dealt to the others as they are (not an attempt).
        unsent = [(url, held.pop(number)) for url, number in remote.pending]
        remote.pending.clear()
        if self._done is None:
            return
        self.lost.append(f"the sender on Dask worker {remote.worker}")
        if held:
            error = TransientError(
                f"Dask worker {remote.worker} was lost with the request out ({exc})"
            )
            self._done([(token, error) for token in held.values()])
        if unsent:
            self.send(list(unsent), self._done)
