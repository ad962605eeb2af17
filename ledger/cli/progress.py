"""Progress bars for long appends, imports and replays: on a terminal only, after a second."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ledger.input.reader import Line


class _NoBar:
    """What a bar is where none is drawn: tqdm is not even imported (a short command pays
    for every import)."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, count: int) -> None:
        return None


def _bar(total: int | None, unit: str, what: str) -> Any:
    if not sys.stderr.isatty():  # tqdm's own disable=None test, made before importing it
        return _NoBar()
    from tqdm import tqdm

    # disable=None: silent when stderr is not a terminal (scripts, CI, pipes);
    # delay: a short command never draws one.
    return tqdm(total=total, unit=unit, unit_scale=True, desc=what, delay=1.0,
                disable=None, file=sys.stderr, leave=False)


def lines(source: Iterable[Line], *, total_bytes: int | None, what: str) -> Iterator[Line]:
    """``source``, counting its bytes on a bar as they are read."""
    with _bar(total_bytes, "B", what) as bar:
        for line in source:
            bar.update(len(line.text) + 1)
            yield line


class CountedLog:
    """A log whose entries tick a bar as projections read them (for ``replay``)."""

    def __init__(self, log: Any, what: str) -> None:
        self.log = log
        self.what = what

    def head(self) -> int:
        return self.log.head()

    def entries(self, after: int = 0) -> Iterator[Any]:
        with _bar(max(0, self.log.head() - after), "event", self.what) as bar:
            for entry in self.log.entries(after=after):
                bar.update(1)
                yield entry


class Ticks:
    """A bar told how far a task is (``tick(done, total)``), drawn once the total is known."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._bar: Any = None
        self._done = self._total = 0

    def __enter__(self) -> Ticks:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None or done < self._done or total != self._total:  # a new task
            if self._bar is not None:
                self._bar.__exit__(None, None, None)
            self._bar, self._done = _bar(total, "event", self.what).__enter__(), 0
            self._total = total
        self._bar.update(done - self._done)
        self._done = done
