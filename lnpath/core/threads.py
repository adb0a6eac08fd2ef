"""Work on threads, results in order, a bounded number in flight.

Reading tiles (OpenSlide, PIL), counting their pixels (NumPy, SciPy) and running the network
(torch) all release the GIL, so threads share one process and one slide handle where worker
processes would copy every tile. Each user wants the same three things: results in the order
of the inputs, memory of a few items rather than of the whole slide, and, when the consumer
stops early (an error, Ctrl-C), no thread left running on the slide.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_on_threads(
    work: Callable[[T], R],
    items: Iterable[T],
    threads: int,
    window: int,
    name: str,
    initializer: Callable[..., object] | None = None,
    initargs: tuple[Any, ...] = (),
) -> Generator[tuple[T, R], None, None]:
    """``(item, work(item))`` in the order of ``items``, on ``threads`` threads named
    ``name-N`` (``initializer(*initargs)`` runs in each first), with at most ``window`` items
    submitted and not yet yielded.

    One thread with no initializer works here, in the caller's thread. An exception from
    ``work`` is raised where its item would have come. Closing the generator early cancels the
    items not started and waits for those being worked on.
    """
    if threads < 1 or window < 1:
        raise ValueError(f"threads and window must be >= 1, got {threads} and {window}")
    if threads == 1 and initializer is None:
        for item in items:
            yield item, work(item)
        return
    pool = ThreadPoolExecutor(threads, name, initializer, initargs)
    pending: collections.deque[tuple[T, Future[R]]] = collections.deque()
    try:
        for item in items:
            pending.append((item, pool.submit(work, item)))
            if len(pending) >= window:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()
    finally:
        for _, future in pending:
            future.cancel()
        pool.shutdown(wait=True)
