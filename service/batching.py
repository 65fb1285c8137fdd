"""Dynamic batching: concurrent requests for one modality share one forward pass.

Each `Batcher` owns a bounded asyncio queue and `workers` worker threads. Its
collector task waits for a free worker, then takes the first waiting item and
everything queued behind it.
Only when others were queued (requests are arriving concurrently) does it wait,
up to `max_wait_ms` after the first, for more to fill the batch; a lone request
runs at once, so latency at concurrency 1 never pays the wait. While batches
run on the worker threads (never on the event loop), new requests queue up and
form the next one. Two workers keep the cores busy where one leaves them idle: a
small model's forward pass has serial stretches (tokenising, small layers, the
hand-over between ONNX Runtime and PyTorch) that a second batch fills; on 2 CPU
cores, two concurrent batches of 32 embed 1.2x the texts of one (docs/benchmarks.md,
Service: HTTP under load). Every caller gets its own row. A full queue is refused at
once (`Overloaded`, HTTP 429 with Retry-After) rather than letting latency grow
without bound; a caller that waits longer than its timeout gets
`RequestTimedOut` (504) and its row, if computed, is dropped.

When a batch function raises anything at all, the batch is re-run item by item,
so one bad input fails only its own request whatever the error's class (a lone
surrogate in a text made the tokenizer raise TypeError, which once failed every
request in its batch). Errors in `per_item_errors` (bad user input, such as a
text over the token limit) are expected and not logged; any other error an item
raises alone is logged with its traceback.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from service.errors import NotReady, Overloaded, RequestTimedOut

T = TypeVar("T")
R = TypeVar("R")

logger = logging.getLogger("mmembed.service.batching")

BatchFn = Callable[[list[T]], Sequence[R]]


@dataclass
class _Pending(Generic[T, R]):
    item: T
    future: asyncio.Future[R]


class BatchObserver:
    """Hooks for metrics; the default does nothing."""

    def batch_done(self, name: str, size: int, seconds: float) -> None:
        """Called after each forward pass with its size and duration."""

    def queue_depth(self, name: str, depth: int) -> None:
        """Called whenever the number of waiting items changes."""


class Batcher(Generic[T, R]):
    """Gathers items from concurrent callers into batches for `fn`.

    `fn(items)` returns one row per item (an array of shape (len(items), D), or any
    sequence); row i belongs to items[i].
    """

    def __init__(
        self,
        name: str,
        fn: BatchFn[T, R],
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        workers: int = 1,
        queue_size: int = 1024,
        timeout_s: float = 30.0,
        per_item_errors: tuple[type[BaseException], ...] = (),
        observer: BatchObserver | None = None,
    ) -> None:
        if max_batch_size < 1 or queue_size < 1 or workers < 1:
            raise ValueError(
                f"max_batch_size ({max_batch_size}), queue_size ({queue_size}) and workers "
                f"({workers}) must be >= 1"
            )
        self.name = name
        self._fn = fn
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.workers = workers
        self.queue_size = queue_size
        self.timeout_s = timeout_s
        self._per_item_errors = per_item_errors
        self._observer = observer or BatchObserver()
        self._queue: asyncio.Queue[_Pending[T, R]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._free: asyncio.Semaphore | None = None
        self._recent_batch_s = 0.0
        # The batches on the workers now, each with the task that runs it.
        self._running: dict[asyncio.Task[None], list[_Pending[T, R]]] = {}

    # Life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            return
        self._queue = asyncio.Queue(maxsize=self.queue_size)
        self._free = asyncio.Semaphore(self.workers)
        self._executor = ThreadPoolExecutor(
            max_workers=self.workers, thread_name_prefix=f"batch-{self.name}"
        )
        self._task = asyncio.create_task(self._collect(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        """Stop collecting; callers still waiting get `NotReady`; the worker threads are joined."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        running, self._running = self._running, {}
        waiting = [pending for batch in running.values() for pending in batch]
        for batch_task in running:
            batch_task.cancel()
        if self._queue is not None:
            while not self._queue.empty():
                waiting.append(self._queue.get_nowait())
        for pending in waiting:
            _settle(pending.future, exc=NotReady("the service is shutting down"))
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown)

    @property
    def depth(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    # Submitting -------------------------------------------------------------------

    async def submit(self, item: T) -> R:
        """The row for one item."""
        return (await self.submit_many([item]))[0]

    async def submit_many(self, items: Sequence[T]) -> list[R]:
        """Rows for several items, in order; all are queued or none (429)."""
        if self._queue is None or self._task is None:
            raise NotReady(f"the {self.name} batcher is not running")
        if self._queue.qsize() + len(items) > self.queue_size:
            raise Overloaded(
                f"too many pending {self.name} requests ({self._queue.qsize()} queued, "
                f"limit {self.queue_size}); retry shortly",
                retry_after_s=self._retry_after_s(),
            )
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        for item, future in zip(items, futures, strict=True):
            self._queue.put_nowait(_Pending(item, future))
        self._observer.queue_depth(self.name, self._queue.qsize())
        try:
            async with asyncio.timeout(self.timeout_s):
                if len(futures) == 1:
                    return [await futures[0]]
                return list(await asyncio.gather(*futures))
        except TimeoutError as exc:
            raise RequestTimedOut(
                f"no {self.name} embedding within {self.timeout_s:g} s; the service is busy"
            ) from exc
        finally:
            for future in futures:
                if not future.done():
                    future.cancel()
                elif not future.cancelled():
                    future.exception()  # mark as retrieved: the caller already has the error

    async def run_on_worker(self, fn: Callable[..., R], *args: Any) -> R:
        """Run `fn(*args)` on one of this batcher's worker threads, queued behind its batches."""
        if self._executor is None:
            raise NotReady(f"the {self.name} batcher is not running")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _retry_after_s(self) -> int:
        batches_ahead = math.ceil(self.depth / (self.max_batch_size * self.workers))
        return max(1, math.ceil(batches_ahead * max(self._recent_batch_s, 0.01)))

    # Collecting -------------------------------------------------------------------

    async def _collect(self) -> None:
        assert self._queue is not None and self._free is not None
        loop = asyncio.get_running_loop()
        while True:
            # A worker first, then the batch: while every worker is busy, the requests
            # arriving queue up and the next batch takes them all.
            await self._free.acquire()
            try:
                batch = [await self._queue.get()]
                deadline = loop.time() + self.max_wait_s
                self._take_queued(batch)
                if len(batch) > 1:
                    # Others were queued behind the first: requests are arriving
                    # concurrently, so give those in flight until the deadline to join.
                    # A lone one runs now.
                    await self._fill(batch, deadline)
            except BaseException:
                self._free.release()
                raise
            self._observer.queue_depth(self.name, self._queue.qsize())
            live = [p for p in batch if not p.future.done()]
            if not live:
                self._free.release()
                continue
            task = loop.create_task(self._run(live), name=f"batch-{self.name}")
            self._running[task] = live
            task.add_done_callback(functools.partial(self._batch_finished, self._free))

    def _batch_finished(self, free: asyncio.Semaphore, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        free.release()  # the semaphore this batch took, even if the batcher restarted since
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("%s batch task failed", self.name, exc_info=exc)

    def _take_queued(self, batch: list[_Pending[T, R]]) -> None:
        assert self._queue is not None
        while len(batch) < self.max_batch_size and not self._queue.empty():
            batch.append(self._queue.get_nowait())

    async def _fill(self, batch: list[_Pending[T, R]], deadline: float) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while len(batch) < self.max_batch_size:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                return
            self._take_queued(batch)

    async def _run(self, batch: list[_Pending[T, R]]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            rows = await loop.run_in_executor(self._executor, self._call, [p.item for p in batch])
        except _WrongRowCount as exc:  # the batch function's bug, not any input's
            logger.error("%s", exc)
            for pending in batch:
                _settle(pending.future, exc=RuntimeError(str(exc)))
            return
        except Exception as exc:
            if len(batch) > 1:
                # Whatever it was, find the input(s) it belongs to: each alone.
                logger.info(
                    "%s batch of %d failed (%s); retrying item by item",
                    self.name,
                    len(batch),
                    type(exc).__name__,
                )
                for pending in batch:
                    if not pending.future.done():
                        await self._run([pending])
                return
            if not isinstance(exc, self._per_item_errors):
                logger.error("%s input failed alone", self.name, exc_info=exc)
            _settle(batch[0].future, exc=exc)
            return
        finally:
            self._recent_batch_s = loop.time() - started
        self._observer.batch_done(self.name, len(batch), loop.time() - started)
        for pending, row in zip(batch, rows, strict=True):
            _settle(pending.future, result=row)

    def _call(self, items: list[T]) -> Sequence[R]:
        rows = self._fn(items)
        if len(rows) != len(items):
            raise _WrongRowCount(
                f"{self.name} batch function returned {len(rows)} rows for {len(items)} items"
            )
        return rows


class _WrongRowCount(RuntimeError):
    """The batch function broke its contract; retrying item by item would hide it."""


def _settle(
    future: asyncio.Future[Any],
    *,
    result: Any = None,
    exc: BaseException | None = None,
) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
