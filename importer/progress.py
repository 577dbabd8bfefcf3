"""Progress reporting, injected: the library never prints.

Call sites always talk to a :class:`Progress`; :class:`NullProgress` (the default) does
nothing, so no call site branches on "silent". The CLI passes a tqdm bar on stderr; notebooks
get ``tqdm.auto`` (a widget when ipywidgets is present).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any, Protocol


class Progress(Protocol):
    """What the pipeline tells about its progress."""

    def start(self, total: int | None, unit: str) -> None:
        """A run begins; ``total`` rows if known."""

    def advance(self, rows: int, **counts: int) -> None:
        """``rows`` more rows are settled; ``counts`` are the running totals to show."""

    def close(self) -> None:
        """The run is over."""

    def note(self, message: str) -> None:
        """Something the user should know now, not only in the final report."""

    def health(self, last_error: str, silent: float) -> None:
        """How delivery goes: the last transient error, seconds since the last success while
        rows wait (0 when all is well). Called with every ``advance`` of a send run."""


class NullProgress:
    """Progress that shows nothing."""

    def start(self, total: int | None, unit: str) -> None:
        return None

    def advance(self, rows: int, **counts: int) -> None:
        return None

    def close(self) -> None:
        return None

    def note(self, message: str) -> None:
        return None

    def health(self, last_error: str, silent: float) -> None:
        return None


class TqdmProgress:
    """A tqdm bar with running counts beside it.

    Args:
        auto: use ``tqdm.auto`` (notebook widget when available) instead of the text bar.
        file: where the text bar goes (stderr by default).
        disable: None lets tqdm switch itself off when not writing to a terminal.
    """

    def __init__(
        self, *, auto: bool = False, file: Any = None, disable: bool | None = None
    ) -> None:
        self.auto = auto
        self.file = file
        self.disable = disable
        self._bar: Any = None

    def start(self, total: int | None, unit: str) -> None:
        tqdm = _tqdm(self.auto)
        self._bar = tqdm(
            total=total,
            unit=unit,
            unit_scale=True,
            file=self.file,
            disable=self.disable,
            dynamic_ncols=True,
            smoothing=0.1,
        )

    def advance(self, rows: int, **counts: int) -> None:
        if self._bar is None:
            return
        if counts:
            self._bar.set_postfix(counts, refresh=False)
        if self._bar.total is not None and self._bar.n + rows > self._bar.total:
            self._bar.total = self._bar.n + rows  # a CSV's total is an estimate
        self._bar.update(rows)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def note(self, message: str) -> None:
        _tqdm(self.auto).write(message, file=self.file)

    def health(self, last_error: str, silent: float) -> None:
        return None


OUTAGE_AFTER = 10.0  # seconds without a success while rows wait: the endpoint is "down"


class Monitor:
    """Never silent: wraps the bar with status lines and a JSON log for unattended runs.

    Without a terminal (cron, CI, nohup) the bar is off, so a line goes to ``stream`` every
    ``interval`` seconds (rows done, rate, retrying, last error, seconds without success) and
    at every change of state: the endpoint stops answering (after ``OUTAGE_AFTER`` s), comes
    back, or the run stops. ``log`` gets one JSON object per line for each event of note:
    start, outage, recover, stop, finish, with counts.

    Args:
        inner: the bar (or nothing) to drive as well.
        stream: where status lines go (stderr).
        interval: seconds between status lines; None for none (a terminal shows the bar).
        log: an open text file for the JSON lines, or None.
        json_stream: write to ``stream`` the log's JSON lines instead of text (``--progress
            json``, for schedulers): every event, a "status" event each ``interval``, and a
            "note" event for each note.
    """

    def __init__(
        self,
        inner: Progress,
        *,
        stream: Any,
        interval: float | None,
        log: Any = None,
        json_stream: bool = False,
    ) -> None:
        self.inner = inner
        self.stream = stream
        self.interval = interval
        self.log = log
        self.json_stream = json_stream
        self.counts: dict[str, int] = {}
        self.done = 0
        self.total: int | None = None
        self._started = self._last_line = time.monotonic()
        self._last_error = ""
        self._silent = 0.0
        self._down_since: float | None = None

    # -- Progress ------------------------------------------------------------------------

    def start(self, total: int | None, unit: str) -> None:
        self.inner.start(total, unit)
        self.total = total
        self._started = self._last_line = time.monotonic()
        self.event("start", total=total)

    def advance(self, rows: int, **counts: int) -> None:
        self.inner.advance(rows, **counts)
        self.done += rows
        self.counts.update(counts)
        now = time.monotonic()
        if self.interval is not None and now - self._last_line >= self.interval:
            if self.json_stream:
                self.event("status", rows_per_s=round(self.done / max(1e-9, now - self._started)))
            else:
                self._line(self.summary())
            self._last_line = now

    def close(self) -> None:
        self.inner.close()

    def note(self, message: str) -> None:
        self.inner.note(message)
        if self.json_stream:
            self.event("note", message)
        elif self.interval is not None and not isinstance(self.inner, TqdmProgress):
            self._line(message)  # the bar's note already went to the terminal

    def health(self, last_error: str, silent: float) -> None:
        self._last_error, self._silent = last_error or self._last_error, silent
        if self._down_since is None and silent >= OUTAGE_AFTER:
            self._down_since = time.monotonic() - silent
            self.event(
                "outage",
                message=f"the endpoint is not answering: nothing delivered for {silent:.0f} s "
                f"(last error: {self._last_error or 'none'}); retrying",
                last_error=self._last_error,
                seconds_without_success=round(silent, 1),
            )
        elif self._down_since is not None and silent < OUTAGE_AFTER:
            lasted = time.monotonic() - self._down_since
            self._down_since = None
            self.event(
                "recover",
                message=f"the endpoint answers again after {lasted:.0f} s; sending",
                outage_seconds=round(lasted, 1),
            )

    # -- events ----------------------------------------------------------------------------

    def summary(self) -> str:
        """The status line: rows done, rate, retrying, last error, seconds without success."""
        elapsed = max(1e-9, time.monotonic() - self._started)
        of = f" of {self.total:,}" if self.total else ""
        counts = ", ".join(f"{k} {v:,}" for k, v in self.counts.items())
        line = f"{self.done:,}{of} rows settled ({counts}); {self.done / elapsed:,.0f} rows/s"
        if self._silent >= 1:  # an old error is no news once requests get through again
            line += f"; {self._silent:.0f} s without success"
            if self._last_error:
                line += f"; last error: {self._last_error}"
        return line

    def event(self, name: str, message: str | None = None, **fields: Any) -> None:
        """An event of note: a line on the stream (if not shown otherwise) and in the log."""
        if message is not None and not self.json_stream:
            self._line(message)
        if self.log is None and not self.json_stream:
            return
        record = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "event": name,
            **({"message": message} if message else {}),
            "rows_done": self.done,
            **({"total": self.total} if self.total is not None else {}),
            **self.counts,
            **fields,  # the caller's numbers (a final report's) win over the last tick's
        }
        line = json.dumps(record, default=str) + "\n"
        for out in (self.log, self.stream if self.json_stream else None):
            if out is not None:
                out.write(line)
                out.flush()

    def _line(self, text: str) -> None:
        stamp = datetime.now().strftime("%H:%M:%S")
        self.stream.write(f"[{stamp}] {text}\n")
        self.stream.flush()


def _tqdm(auto: bool) -> Any:
    """tqdm.auto's widget when ipywidgets is installed; the text bar otherwise.

    (tqdm.auto without ipywidgets warns "IProgress not found" in every notebook cell.)
    """
    if auto:
        import importlib.util

        if importlib.util.find_spec("ipywidgets") is not None:
            from tqdm.auto import tqdm as widget

            return widget
    from tqdm import tqdm as text

    return text


ProgressLike = Progress | bool | None


def choose(progress: ProgressLike) -> Progress:
    """The progress to use for a ``progress=`` argument.

    None: a ``tqdm.auto`` bar inside Jupyter (a widget when ipywidgets is installed), nothing
    elsewhere, so scripts stay silent. True: a ``tqdm.auto`` bar. False: nothing. A
    :class:`Progress` object is used as it is.
    """
    if progress is None:
        return TqdmProgress(auto=True) if in_notebook() else NullProgress()
    if progress is True:
        return TqdmProgress(auto=True)
    if progress is False:
        return NullProgress()
    return progress


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel."""
    import sys

    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ipython = shell.get_ipython()
    return ipython is not None and "IPKernelApp" in getattr(ipython, "config", {})
