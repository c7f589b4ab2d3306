"""Wall-clock seconds per named stage of a run, for ``scores.json`` and verbose output."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class StageTimer:
    """Adds up wall-clock seconds per stage; a stage may be timed several times.

    Examples
    --------
    >>> timer = StageTimer()
    >>> with timer("tissue"):
    ...     pass
    >>> timer.add("nuclei_net", 1.5)
    >>> sorted(timer.seconds)
    ['nuclei_net', 'tissue']
    >>> timer.seconds["nuclei_net"]
    1.5
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        """Add ``seconds`` to ``stage``."""
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t)

    def rounded(self, digits: int = 2) -> dict[str, float]:
        """The seconds per stage, rounded, in the order the stages first ran."""
        return {k: round(v, digits) for k, v in self.seconds.items()}
