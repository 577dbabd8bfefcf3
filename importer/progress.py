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
        self._bar.update(rows)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def note(self, message: str) -> None:
        _tqdm(self.auto).write(message, file=self.file)


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
