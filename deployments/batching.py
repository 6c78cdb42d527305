"""Concurrent calls gathered into batches when a stage can run them: the Encoder's batches, the ingress's calls to
it and its decoding; and a request's windows sent to the Encoder in ranked chunks, so long ones take turns."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

Item = TypeVar("Item")
Result = TypeVar("Result")


def one_each(item: object) -> int:
    return 1


def first_come(item: object) -> int:
    return 0


@dataclass(frozen=True)
class WindowChunk:
    """Some of one request's feature windows on their way to the encoder: `before` of that request's windows went
    ahead of them (0 for a request's first chunk), which is its rank in a batch's queue (`chunk_rank`)."""

    windows: list[np.ndarray]
    scored: bool = False  # the request searches: the encoder returns frame scores (model.beam)
    before: int = 0
    queued: float = field(default_factory=time.monotonic)


def chunk_windows(chunk: WindowChunk) -> int:
    return len(chunk.windows)


def chunk_rank(chunk: WindowChunk) -> int:
    """Requests that have had fewer windows encoded go first: a short request, or a stream's next window, joins the
    next batch ahead of the later chunks of a long request queued before it, and long requests take turns."""
    return chunk.before


async def encode_in_chunks(
    send: Callable[[WindowChunk], Awaitable[list[np.ndarray] | Exception]],
    windows: list[np.ndarray],
    scored: bool,
    size: int,
    in_flight: int,
    before: int = 0,
) -> list[np.ndarray]:
    """One request's windows (`before` of its windows went ahead of them) -> their encoder outputs, in order: sent
    in chunks of `size` windows, `in_flight` out at once, each ranked by the windows before it (chunk_rank), so
    the requests that come after a long one (a stream's next window, a short clip) join the next batch ahead of its
    later chunks instead of waiting until all its windows are through. Raises the exception a chunk gets back."""
    gate = asyncio.Semaphore(in_flight)

    async def send_chunk(start: int) -> list[np.ndarray]:
        async with gate:
            encoded = await send(WindowChunk(windows[start : start + size], scored, before + start))
        if isinstance(encoded, Exception):
            raise encoded
        return encoded

    sends = [asyncio.ensure_future(send_chunk(start)) for start in range(0, len(windows), size)]
    try:
        chunks = await asyncio.gather(*sends)
    except BaseException:
        for pending in sends:
            pending.cancel()  # the chunks not yet through: their request has its answer
        raise
    return [output for chunk in chunks for output in chunk]


class Batcher(Generic[Item, Result]):
    """`await batcher(item)` from concurrent calls -> `run(items)` calls of up to `max_size` in all (each item
    counting its `size`: 1 by default), at most `concurrency` of them at once, each item's caller getting its result
    (`run` returns one per item, in order). An item larger than `max_size` runs in a batch of its own.

    A batch forms when a run may start: of the items that queued while every run was busy, lowest `rank` first
    (first come first among equals; all equal by default) as long as they fit, so the busier the stage, the larger
    its batches; with less than `max_size` queued it waits up to `wait_s` for more (0: a lone item runs at once).
    Serve's `@serve.batch` (Ray 2.60) forms a batch as soon as its first item arrives, even while its runs are all
    busy, so under load without a wait it ran every item in a batch of its own.
    An exception `run` raises goes to every caller of its batch; a caller that gave up (cancelled) is left out."""

    def __init__(
        self,
        run: Callable[[list[Item]], Awaitable[list[Result]]],
        max_size: int,
        wait_s: float = 0.0,
        concurrency: int = 1,
        size: Callable[[Item], int] = one_each,
        rank: Callable[[Item], int] = first_come,
    ) -> None:
        self.run = run
        self.max_size = max_size
        self.wait_s = wait_s
        self.concurrency = concurrency
        self.size = size
        self.rank = rank
        self._queue: deque[tuple[Item, asyncio.Future[Result]]] = deque()
        self._arrived: asyncio.Event | None = None  # made in the first call, on the loop the replica calls it in
        self._runners: list[asyncio.Task[None] | None] = []

    async def __call__(self, item: Item) -> Result:
        if self._arrived is None:
            self._arrived = asyncio.Event()
        # Kept here (asyncio holds tasks weakly); one that ended (a cancellation out of `run`) is started again, so
        # no caller waits on a queue nothing takes from.
        self._runners = [
            runner if runner is not None and not runner.done() else asyncio.create_task(self._run_batches())
            for runner in self._runners or [None] * self.concurrency
        ]
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._arrived.set()
        return await future

    async def _next_batch(self) -> list[tuple[Item, asyncio.Future[Result]]]:
        assert self._arrived is not None
        while not self._queue:
            self._arrived.clear()
            await self._arrived.wait()
        deadline = time.monotonic() + self.wait_s
        while self._queued_size() < self.max_size and (left := deadline - time.monotonic()) > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
                break
        taken, total = [], 0
        for entry in sorted(self._queue, key=lambda entry: self.rank(entry[0])):  # stable: first come among equals
            entry_size = self.size(entry[0])
            if taken and total + entry_size > self.max_size:
                break
            taken.append(entry)
            total += entry_size
        chosen = {id(entry) for entry in taken}
        self._queue = deque(entry for entry in self._queue if id(entry) not in chosen)
        return [(item, future) for item, future in taken if not future.cancelled()]

    def _queued_size(self) -> int:
        return sum(self.size(item) for item, _ in self._queue)

    async def _run_batches(self) -> None:
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            try:
                results = await self.run([item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"a batch of {len(batch)} items gave {len(results)} results")
            except BaseException as err:  # every caller of the batch gets it
                for _, future in batch:
                    if future.done():
                        continue
                    if isinstance(err, asyncio.CancelledError):
                        future.cancel()
                    else:
                        future.set_exception(err)
                if not isinstance(err, Exception):
                    raise  # this runner ends; the next call starts another
                continue
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)
