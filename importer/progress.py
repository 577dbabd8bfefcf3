"""Progress reporting, injected: the library never prints.

Call sites always talk to a :class:`Progress`; :class:`NullProgress` (the default) does
nothing, so no call site branches on "silent". The CLI passes a tqdm bar on stderr; notebooks
get ``tqdm.auto`` (a widget when ipywidgets is present).
"""

from __future__ import annotations

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


class TqdmProgress:
    """A tqdm bar with running counts beside it.

    Args:
        auto: use ``tqdm.auto`` (notebook widget when available) instead of the text bar.
        file: where the text bar goes (stderr by default).
        disable: None lets tqdm switch itself off when not writing to a terminal.
    """

    def __init__(self, *, auto: bool = False, file: Any = None, disable: bool | None = None) -> None:
        self.auto = auto
        self.file = file
        self.disable = disable
        self._bar: Any = None

    def start(self, total: int | None, unit: str) -> None:
        if self.auto:
            from tqdm.auto import tqdm
        else:
            from tqdm import tqdm
        self._bar = tqdm(total=total, unit=unit, unit_scale=True, file=self.file,
                         disable=self.disable, dynamic_ncols=True, smoothing=0.1)

    def advance(self, rows: int, **counts: int) -> None:
        if self._bar is None:
            return
        if counts:
            self._bar.set_postfix(counts, refresh=False)
        self._bar.update(rows)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def note(self, message: str) -> None:
        if self.auto:
            from tqdm.auto import tqdm
        else:
            from tqdm import tqdm
        tqdm.write(message, file=self.file)
