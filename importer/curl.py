"""libcurl's multi interface as the sender's transport (``--transport curl``).

aiohttp spends ~90 µs of Python per request; a tight libcurl multi loop ~14 µs. So this
transport runs one such loop in its own thread, over handles and connections it reuses, and
never puts a future per request on the event loop: the sender's pump hands it batches of
ready-made URLs (:meth:`CurlTransport.send`) and gets outcomes back in batches through
``loop.call_soon_threadsafe``. The thread holds the GIL only for a few attribute sets per
request; libcurl's own work (sockets, parsing, TLS) runs without it.

What each outcome means is the aiohttp transport's, rule for rule (tests run both against
the same servers):

* a 2xx is done; any other answer is :func:`importer.transport.answer_error`'s, with the
  ``Location`` and ``Retry-After`` (seconds or a date) libcurl read; redirects are never
  followed;
* "not sent" (``maybe_delivered=False``): the name did not resolve, the connection was refused
  or timed out, TLS failed: the request was never written;
* "maybe delivered": the connection broke or the answer did not come within the total timeout
  after the request was written;
* libcurl resends a request by itself when a kept-alive connection turns out closed (as
  aiohttp did until we turned it off): a copy the sender never sees. A prerequest callback
  (libcurl >= 7.80) refuses that second attempt, so it comes back as "server closed the
  connection", maybe delivered, and the sender decides, counting it in the duplicate bound.

pycurl is an optional extra: ``pip install 'event-backfill[curl]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import threading
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Self

from yarl import URL

from importer.errors import DeliveryError, PermanentError, TransientError, UsageError
from importer.options import SendOptions
from importer.transport import NOT_SENT, USER_AGENT, Outcomes, answer_error

if TYPE_CHECKING:
    import pycurl

INSTALL_HINT = "pip install 'event-backfill[curl]'"

_Done = Callable[[Outcomes], None]
_IDLE_WAIT = 1.0  # seconds the thread sleeps with nothing out (a send wakes it at once)
# With requests out the thread waits in libcurl's select, which a send cannot interrupt: a
# send waits at most this long to start (a pipe write per send would cost more than that).
_BUSY_WAIT = 0.002


def load_pycurl() -> Any:
    """pycurl, or a :class:`UsageError` that says how to install it (or a newer one)."""
    try:
        import pycurl
    except ImportError as exc:
        raise UsageError(
            f"--transport curl needs pycurl, which is not installed ({exc}): {INSTALL_HINT}"
        ) from None
    missing = [name for name in _NEEDED if not hasattr(pycurl, name)]
    if missing:
        raise UsageError(
            f"--transport curl needs pycurl >= 7.48 with libcurl >= 7.80; this is "
            f"{pycurl.version} (no {', '.join(missing)}): pip install -U 'event-backfill[curl]'"
        )
    return pycurl


# What the transport relies on: the prerequest callback (it refuses libcurl's own resend and
# tells whether a request was ever written) and the Retry-After libcurl parsed.
_NEEDED = ("PREREQFUNCTION", "PREREQFUNC_ABORT", "RETRY_AFTER", "REDIRECT_URL")


def ca_bundle() -> tuple[str | None, str | None]:
    """The CA file and directory to verify servers with, as Python's ssl module (and so the
    aiohttp transport) finds them: ``SSL_CERT_FILE``/``SSL_CERT_DIR`` when set, else
    certifi's bundle when installed, else the system's; never a path compiled into the
    wheel's libcurl for another distribution."""
    import ssl

    from importer.preflight import certifi_cafile

    paths = ssl.get_default_verify_paths()
    cafile = (
        _existing(os.environ.get(paths.openssl_cafile_env))
        or certifi_cafile()
        or paths.cafile
        or _existing(paths.openssl_cafile)
    )
    capath = (
        _existing(os.environ.get(paths.openssl_capath_env))
        or paths.capath
        or _existing(paths.openssl_capath)
    )
    return cafile, capath


def _existing(path: str | None) -> str | None:
    return path if path and os.path.exists(path) else None


class CurlTransport:
    """A libcurl multi handle in its own thread: at most ``concurrency`` connections, kept
    alive and reused; HTTP/2 multiplexing with ``options.http2``."""

    takes_text_urls = True  # Work's URLs as text: no yarl URL built only to be turned back

    def __init__(self, options: SendOptions) -> None:
        self.options = options
        self._pycurl = load_pycurl()
        self._inbox: deque[tuple[str, Any, Any]] = deque()
        self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._crashed: BaseException | None = None
        self._idle = False  # the thread waits for a send on the pipe

    # -- the event loop's side ---------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(target=self._run, name="event-backfill-curl", daemon=True)
        self._thread.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        thread = self._thread
        if thread is None:
            return
        await self._ask("close")
        self._thread = None
        await asyncio.to_thread(thread.join)
        os.close(self._wake_r)
        os.close(self._wake_w)

    def send(self, requests: list[tuple[URL | str, Any]], done: _Done) -> None:
        """See :meth:`importer.transport.BatchTransport.send`."""
        if self._crashed is not None:
            error = TransientError(f"the curl transport stopped: {self._crashed}")
            done([(token, error) for _, token in requests])
            return
        self._inbox.append(("send", requests, done))
        if self._idle:
            self._wake()

    def drain(self) -> None:
        """See :meth:`importer.transport.BatchTransport.drain`."""
        if self._crashed is None:
            self._inbox.append(("drain", None, None))
            self._wake()

    async def cancel(self) -> None:
        """See :meth:`importer.transport.BatchTransport.cancel`."""
        await self._ask("cancel")

    async def _ask(self, what: str) -> None:
        assert self._loop is not None
        answered = self._loop.create_future()
        if self._crashed is not None or self._thread is None:
            return
        self._inbox.append((what, answered, None))
        self._wake()
        await answered

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # the pipe is full: the thread is awake
            os.write(self._wake_w, b"!")

    # -- the thread's side -------------------------------------------------------------------

    def _run(self) -> None:
        multi: _Loop | None = None
        try:
            multi = _Loop(self)
            multi.run()
        except BaseException as exc:  # the loop must hear of it, or the run would wait
            self._crashed = exc
            reason = f"the curl transport stopped: {type(exc).__name__}: {exc}"
            self._post_crash(reason, multi.held(reason) if multi is not None else {})

    def _post_crash(self, reason: str, held: dict[_Done, Outcomes]) -> None:
        """Answer everything waiting: requests held or asked for fail (transiently; those
        out may have arrived), and cancel or close return."""
        loop = self._loop
        assert loop is not None
        pending = list(self._inbox)
        self._inbox.clear()

        def answer() -> None:
            for done, outcomes in held.items():
                done(outcomes)
            for what, first, done in pending:
                if what == "send":
                    error = TransientError(reason, maybe_delivered=False)
                    done([(token, error) for _, token in first])
                elif not first.done():
                    first.set_result(None)

        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(answer)


class _Slot:
    """What the thread keeps of a handle's current request (attributes on a pycurl handle
    cost an exception per read: pycurl looks them up after a failed generic lookup)."""

    __slots__ = ("attempts", "done", "fresh", "token", "url")

    def __init__(self) -> None:
        self.token: Any = None
        self.done: _Done = _nobody
        # Attempts libcurl began to write (the prerequest callback counts them): 0 means
        # the request never went out, whatever else failed.
        self.attempts = 0
        self.fresh = False  # FRESH_CONNECT is set on the handle
        self.url: URL | str = ""


def _nobody(outcomes: Outcomes) -> None:
    raise AssertionError("a request without a callback")


class _Loop:
    """The multi loop, on the transport's thread: add, perform, read, report, wait."""

    def __init__(self, transport: CurlTransport) -> None:
        self.transport = transport
        self.pycurl = pycurl_ = transport._pycurl
        self.loop = transport._loop
        opts = transport.options
        self.multi = multi = pycurl_.CurlMulti()
        multi.setopt(pycurl_.M_MAX_TOTAL_CONNECTIONS, opts.concurrency)
        multi.setopt(pycurl_.M_MAX_HOST_CONNECTIONS, opts.concurrency)
        multi.setopt(
            pycurl_.M_PIPELINING,
            pycurl_.PIPE_MULTIPLEX if opts.http2 else pycurl_.PIPE_NOTHING,
        )
        self.limit = opts.concurrency
        self.ready: deque[tuple[URL | str, Any, _Done]] = deque()  # handed over, not started
        self.free: list[pycurl.Curl] = []
        self.busy: set[pycurl.Curl] = set()
        self.slots: dict[pycurl.Curl, _Slot] = {}
        self.cafile, self.capath = ca_bundle()
        # URLs whose request met a dead kept-alive connection: their retry connects afresh.
        self.suspect: set[URL | str] = set()
        # Failures that say the connection itself broke (see connection_died).
        self.broken = frozenset(
            getattr(pycurl_, name)
            for name in ("E_SEND_ERROR", "E_RECV_ERROR", "E_HTTP2", "E_HTTP2_STREAM")
            if hasattr(pycurl_, name)
        )

    def held(self, reason: str) -> dict[_Done, Outcomes]:
        """After a crash: every request held, failed (those out may have arrived)."""
        outcomes: dict[_Done, Outcomes] = {}
        for c in self.busy:
            slot = self.slots[c]
            error = TransientError(reason, maybe_delivered=bool(slot.attempts))
            outcomes.setdefault(slot.done, []).append((slot.token, error))
        for _, token, done in self.ready:
            error = TransientError(reason, maybe_delivered=False)
            outcomes.setdefault(done, []).append((token, error))
        return outcomes

    def handle(self) -> pycurl.Curl:
        """A new easy handle with the run's options (reused for every later request)."""
        pc, opts = self.pycurl, self.transport.options
        c = pc.Curl()
        c.setopt(pc.NOSIGNAL, 1)
        c.setopt(pc.WRITEFUNCTION, len)  # read the body, keep nothing
        c.setopt(pc.FOLLOWLOCATION, 0)
        c.setopt(pc.USERAGENT, USER_AGENT)
        c.setopt(pc.PROXY, "")  # like aiohttp: no proxy from the environment
        c.setopt(pc.CONNECTTIMEOUT_MS, max(1, int(opts.connect_timeout * 1000)))
        c.setopt(pc.TIMEOUT_MS, max(1, int(opts.total_timeout * 1000)))
        c.setopt(pc.SSL_VERIFYPEER, 1)
        c.setopt(pc.SSL_VERIFYHOST, 2)
        if self.cafile:
            c.setopt(pc.CAINFO, self.cafile)
        if self.capath:
            c.setopt(pc.CAPATH, self.capath)
        if opts.http2:
            c.setopt(pc.HTTP_VERSION, pc.CURL_HTTP_VERSION_2TLS)
            c.setopt(pc.PIPEWAIT, 1)
        else:
            c.setopt(pc.HTTP_VERSION, pc.CURL_HTTP_VERSION_1_1)
        slot = self.slots[c] = _Slot()
        ok: int = pc.PREREQFUNC_OK
        refuse: int = pc.PREREQFUNC_ABORT

        def prerequest(*_connection: object) -> int:
            # Called as each attempt is about to be written: a second one is libcurl
            # resending by itself on a new connection. Refuse it (see the module's doc).
            slot.attempts += 1
            return ok if slot.attempts == 1 else refuse

        c.setopt(pc.PREREQFUNCTION, prerequest)
        # No HEADERFUNCTION: a callback per header line (the GIL taken ~7 times inside each
        # perform) cost ~20% of the throughput. A non-2xx answer is read from what libcurl
        # parsed instead (see answer_error).
        return c

    def run(self) -> None:
        pc, multi, inbox = self.pycurl, self.multi, self.transport._inbox
        wake_r = self.transport._wake_r
        outcomes: dict[_Done, Outcomes] = {}
        try:
            while True:
                while inbox:
                    what, first, done = inbox.popleft()
                    if what == "send":
                        self.add(first, done)
                        continue
                    if what == "drain":
                        self.drop_ready(outcomes)
                        self.report(outcomes)
                        continue
                    self.read(outcomes)
                    if what == "cancel":
                        self.drop_all(outcomes)
                    self.report(outcomes)
                    self.answer(first)
                    if what == "close":
                        return
                while True:
                    ret, _ = multi.perform()
                    if ret != pc.E_CALL_MULTI_PERFORM:
                        break
                self.read(outcomes)
                if outcomes:
                    self.report(outcomes)
                if inbox:
                    continue
                self.wait(wake_r)
        finally:
            self.drop_all({})
            for c in self.free:
                c.close()
            multi.close()

    def add(self, requests: list[tuple[URL | str, Any]], done: _Done) -> None:
        """Queue requests; start as many as there is room for (:meth:`start`)."""
        ready = self.ready
        for url, token in requests:
            ready.append((url, token, done))
        self.start()

    def start(self) -> None:
        """Start ready requests while fewer than ``concurrency`` are out: the next one goes
        the moment one ends, without waiting for the event loop."""
        ready, busy, limit = self.ready, self.busy, self.limit
        if not ready or len(busy) >= limit:
            return
        pc, multi, free, slots = self.pycurl, self.multi, self.free, self.slots
        option, suspect = pc.URL, self.suspect
        while ready and len(busy) < limit:
            url, token, done = ready.popleft()
            c = free.pop() if free else self.handle()
            c.setopt(option, url if url.__class__ is str else str(url))
            slot = slots[c]
            slot.token, slot.done, slot.attempts, slot.url = token, done, 0, url
            fresh = bool(suspect) and url in suspect
            if fresh:
                suspect.discard(url)
            if slot.fresh is not fresh:
                c.setopt(pc.FRESH_CONNECT, fresh)
                slot.fresh = fresh
            multi.add_handle(c)
            busy.add(c)

    def read(self, outcomes: dict[_Done, Outcomes]) -> None:
        """Take every finished transfer off the multi handle, with its outcome."""
        multi, free, busy, slots = self.multi, self.free, self.busy, self.slots
        code_of = self.pycurl.RESPONSE_CODE
        while True:
            queued, succeeded, failed = multi.info_read()
            for c in succeeded:
                status = c.getinfo(code_of)
                slot = slots[c]
                error = None if 200 <= status < 300 else self.answer_error(c, status)
                batch = outcomes.get(slot.done)
                if batch is None:
                    batch = outcomes[slot.done] = []
                batch.append((slot.token, error))
                multi.remove_handle(c)
                busy.discard(c)
                free.append(c)
            for c, code, message in failed:
                slot = slots[c]
                error = self.failure(slot, code, message)
                outcomes.setdefault(slot.done, []).append((slot.token, error))
                multi.remove_handle(c)
                busy.discard(c)
                free.append(c)
            if not queued:
                self.start()
                return

    def answer_error(self, c: pycurl.Curl, status: int) -> DeliveryError | None:
        """What a non-2xx answer means, from what libcurl parsed of it: ``Retry-After`` in
        whole seconds (a date too; 0 reads as none), ``Location`` resolved against the URL,
        the standard reason phrase. Each differs from the raw header only towards waiting
        longer or in wording (see docs/architecture.md)."""
        pc = self.pycurl
        headers: dict[str, str] = {}
        location = c.getinfo(pc.REDIRECT_URL)
        if location:
            headers["Location"] = location
        retry_after = c.getinfo(pc.RETRY_AFTER)
        if retry_after > 0:
            headers["Retry-After"] = str(retry_after)
        reason = ""
        with contextlib.suppress(ValueError):
            reason = HTTPStatus(status).phrase
        return answer_error(status, reason, headers)

    def failure(self, slot: _Slot, code: int, message: str) -> DeliveryError:
        """What a failed transfer means, as the aiohttp transport's :func:`translate` says;
        more precisely where libcurl knows more: a request it never began to write (the
        prerequest callback never ran) cannot have arrived, whatever timed out."""
        pc = self.pycurl
        if code in (pc.E_URL_MALFORMAT, pc.E_UNSUPPORTED_PROTOCOL):
            return PermanentError(f"invalid URL: {message}", maybe_delivered=False)
        if code == pc.E_ABORTED_BY_CALLBACK:  # our prerequest refused libcurl's own resend
            self.connection_died(slot)
            return TransientError("server closed the connection")
        if code in self.broken and slot.attempts:
            self.connection_died(slot)  # a dead connection: a broken pipe, an HTTP/2 close
        if not slot.attempts:
            if code == pc.E_OPERATION_TIMEDOUT:
                return TransientError("connect timed out", maybe_delivered=False)
            return TransientError(f"cannot connect: {message}", maybe_delivered=False)
        if code == pc.E_OPERATION_TIMEDOUT:
            return TransientError("timed out waiting for the answer")
        if code == pc.E_GOT_NOTHING:
            return TransientError("server closed the connection")
        return TransientError(f"connection error: {message}")

    def connection_died(self, slot: _Slot) -> None:
        """The request met a dead kept-alive connection. Others in the pool may be dead too
        (libcurl checks an idle one only after ~1 s idle), so its retry connects afresh and
        cannot meet another. Only its retry: connecting afresh for every request for a while
        opened a connection per request against a server that drops them often. Not with
        HTTP/2, where a fresh connection would end multiplexing."""
        if not self.transport.options.http2:
            if len(self.suspect) > _MOST_SUSPECTS:
                self.suspect.clear()
            self.suspect.add(slot.url)

    def report(self, outcomes: dict[_Done, Outcomes]) -> None:
        """Hand outcomes to the event loop, one call per batch."""
        loop = self.loop
        assert loop is not None
        for done, batch in outcomes.items():
            loop.call_soon_threadsafe(done, batch)
        outcomes.clear()

    def answer(self, future: asyncio.Future[None]) -> None:
        loop = self.loop
        assert loop is not None

        def resolve() -> None:
            if not future.done():
                future.set_result(None)

        loop.call_soon_threadsafe(resolve)

    def drop_ready(self, outcomes: dict[_Done, Outcomes]) -> None:
        """Requests handed over but not started: reported NOT_SENT, never started."""
        for _, token, done in self.ready:
            outcomes.setdefault(done, []).append((token, NOT_SENT))
        self.ready.clear()

    def drop_all(self, outcomes: dict[_Done, Outcomes]) -> None:
        """Cut off every request held: those never written are reported NOT_SENT; nothing
        is reported for those cut off mid-request (they may have arrived)."""
        self.drop_ready(outcomes)
        for c in list(self.busy):
            self.multi.remove_handle(c)
            self.free.append(c)
            slot = self.slots[c]
            if not slot.attempts:
                outcomes.setdefault(slot.done, []).append((slot.token, NOT_SENT))
        self.busy.clear()

    def wait(self, wake_r: int) -> None:
        """Until a socket is ready or libcurl's timer is due, for at most _BUSY_WAIT (the
        loop may send more meanwhile: it is taken then); with nothing out, until a send."""
        transport = self.transport
        if self.busy:
            timeout_ms = self.multi.timeout()
            if timeout_ms != 0:
                wait = _BUSY_WAIT if timeout_ms < 0 else min(timeout_ms / 1000, _BUSY_WAIT)
                self.multi.select(wait)  # libcurl's own fdset and select, GIL released
            return
        transport._idle = True
        try:
            if not transport._inbox:  # a send after this line writes to the pipe
                select.select([wake_r], [], [], _IDLE_WAIT)
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 4096)
        finally:
            transport._idle = False


# URLs remembered for a fresh connection at once, at most (a retry that never comes must
# not make the set grow without end).
_MOST_SUSPECTS = 100_000
