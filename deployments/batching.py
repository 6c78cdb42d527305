"""Concurrent calls gathered into batches when a stage can run them: the Encoder's batches, the ingress's calls to
it and its decoding."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    """`await batcher(item)` from concurrent calls -> `run(items)` calls of up to `max_size` items each, at most
    `concurrency` of them at once, each item's caller getting its result (`run` returns one per item, in order).

    A batch forms when a run may start: of the items that queued while every run was busy, so the busier the
    stage, the larger its batches; with fewer than `max_size` queued it waits up to `wait_s` for more (0: a lone
    item runs at once). Serve's `@serve.batch` (Ray 2.60) forms a batch as soon as its first item arrives, even
    while its runs are all busy, so under load without a wait it ran every item in a batch of its own.
    An exception `run` raises goes to every caller of its batch; a caller that gave up (cancelled) is left out."""

    def __init__(
        self,
        run: Callable[[list[Item]], Awaitable[list[Result]]],
        max_size: int,
        wait_s: float = 0.0,
        concurrency: int = 1,
    ) -> None:
        self.run = run
        self.max_size = max_size
        self.wait_s = wait_s
        self.concurrency = concurrency
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
        while len(self._queue) < self.max_size and (left := deadline - time.monotonic()) > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
                break
        taken = [self._queue.popleft() for _ in range(min(self.max_size, len(self._queue)))]
        return [(item, future) for item, future in taken if not future.cancelled()]

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
