"""The dynamic batcher with a fake batch function: grouping, rows, limits, failures."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import numpy as np
import pytest

from service.batching import Batcher, BatchObserver
from service.errors import NotReady, Overloaded, RequestTimedOut


class BadItem(ValueError):
    pass


class Recorder(BatchObserver):
    def __init__(self) -> None:
        self.sizes: list[int] = []

    def batch_done(self, name: str, size: int, seconds: float) -> None:
        self.sizes.append(size)


def rows_for(items: list[int]) -> np.ndarray:
    """Row i is [item, item * 2]: each caller can check it got its own row."""
    if any(i < 0 for i in items):
        raise BadItem(f"negative item in {items}")
    return np.array([[i, 2 * i] for i in items], dtype=np.float32)


def blocked_until(release: threading.Event) -> Callable[[list[int]], np.ndarray]:
    """A batch function that waits (up to 5 s) for `release` before answering."""

    def slow(items: list[int]) -> np.ndarray:
        release.wait(5)
        return rows_for(items)

    return slow


def run(coro):
    return asyncio.run(coro)


def submit_all(batcher: Batcher, items, *, return_exceptions: bool = False) -> list:
    """Start ``batcher``, submit every item at once, gather the answers, stop it."""

    async def main():
        await batcher.start()
        try:
            return await asyncio.gather(
                *(batcher.submit(i) for i in items), return_exceptions=return_exceptions
            )
        finally:
            await batcher.stop()

    return run(main())


def test_concurrent_callers_share_batches_and_get_their_own_rows():
    recorder = Recorder()
    threads: set[str] = set()

    def fn(items: list[int]) -> np.ndarray:
        threads.add(threading.current_thread().name)
        return rows_for(items)

    rows = submit_all(
        Batcher("t", fn, max_batch_size=8, max_wait_ms=50, observer=recorder), range(40)
    )
    assert [r.tolist() for r in rows] == [[i, 2 * i] for i in range(40)]
    assert sum(recorder.sizes) == 40
    assert max(recorder.sizes) == 8, "batches are capped at max_batch_size"
    assert len(recorder.sizes) == 5
    assert all(name.startswith("batch-t") for name in threads), "runs on the worker thread"


def test_two_workers_run_two_batches_at_once_and_no_more():
    """Each batch waits at a 2-party barrier: it only opens if two batches run together
    (one worker would time out there). A third batch waits for a free worker."""
    barrier = threading.Barrier(2, timeout=5)
    lock = threading.Lock()
    running = most = 0
    threads: set[str] = set()

    def fn(items: list[int]) -> np.ndarray:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            threads.add(threading.current_thread().name)
        try:
            barrier.wait()
            return rows_for(items)
        finally:
            with lock:
                running -= 1

    rows = submit_all(Batcher("t", fn, max_batch_size=4, max_wait_ms=0, workers=2), range(16))
    assert [r.tolist() for r in rows] == [[i, 2 * i] for i in range(16)]
    assert most == 2, "two batches ran together, never three"
    assert len(threads) == 2


def test_a_lone_request_runs_at_once_without_waiting_for_company():
    """Concurrency 1 never pays max_wait: with a 60 s wait, each request still finishes."""
    recorder = Recorder()

    async def main():
        batcher = Batcher("t", rows_for, max_batch_size=64, max_wait_ms=60_000, observer=recorder)
        await batcher.start()
        try:
            # A wait would hold each of these for 60 s; the 10 s limit fails the test then.
            async with asyncio.timeout(10):
                first = await batcher.submit(3)
                second = await batcher.submit(4)
        finally:
            await batcher.stop()
        return first, second

    first, second = run(main())
    assert first.tolist() == [3, 6] and second.tolist() == [4, 8]
    assert recorder.sizes == [1, 1]


def test_requests_arriving_together_wait_for_latecomers_to_fill_the_batch():
    """Two queued at once open a wait; one sent 50 ms later still joins their batch."""
    recorder = Recorder()

    async def main():
        batcher = Batcher("t", rows_for, max_batch_size=8, max_wait_ms=2_000, observer=recorder)
        await batcher.start()
        try:
            together = [asyncio.ensure_future(batcher.submit(i)) for i in (1, 2)]
            await asyncio.sleep(0.05)
            late = await batcher.submit_many([3, 4, 5, 6, 7, 8])  # fills the batch of 8
            return [r.tolist() for r in await asyncio.gather(*together)], late
        finally:
            await batcher.stop()

    together, late = run(main())
    assert together == [[1, 2], [2, 4]] and late[-1].tolist() == [8, 16]
    assert recorder.sizes == [8]


def test_submit_many_keeps_order():
    async def main():
        batcher = Batcher("t", rows_for, max_batch_size=4, max_wait_ms=5)
        await batcher.start()
        try:
            return await batcher.submit_many([5, 1, 9, 2, 7, 3])
        finally:
            await batcher.stop()

    assert [r[0] for r in run(main())] == [5, 1, 9, 2, 7, 3]


def test_full_queue_is_refused_with_retry_after():
    release = threading.Event()
    slow = blocked_until(release)

    async def main():
        batcher = Batcher("t", slow, max_batch_size=1, max_wait_ms=0, queue_size=2)
        await batcher.start()
        try:
            running = asyncio.ensure_future(batcher.submit(0))
            await asyncio.sleep(0.05)  # the collector has taken item 0 off the queue
            queued = [asyncio.ensure_future(batcher.submit(i)) for i in (1, 2)]
            await asyncio.sleep(0)
            with pytest.raises(Overloaded) as info:
                await batcher.submit(3)
            with pytest.raises(Overloaded):
                await batcher.submit_many([4, 5])
            release.set()
            done = await asyncio.gather(running, *queued)
        finally:
            release.set()
            await batcher.stop()
        return info.value, done

    error, done = run(main())
    assert error.status_code == 429
    assert int(error.headers["Retry-After"]) >= 1
    assert [r[0] for r in done] == [0, 1, 2]


def test_a_caller_past_its_timeout_gets_504_and_the_batcher_keeps_working():
    release = threading.Event()

    def slow(items: list[int]) -> np.ndarray:
        if 99 in items:
            release.wait(5)
        return rows_for(items)

    async def main():
        batcher = Batcher("t", slow, max_batch_size=1, max_wait_ms=0, timeout_s=0.1)
        await batcher.start()
        try:
            with pytest.raises(RequestTimedOut):
                await batcher.submit(99)
            release.set()
            return await batcher.submit(5)
        finally:
            release.set()
            await batcher.stop()

    assert run(main()).tolist() == [5, 10]


def test_a_bad_item_fails_only_its_own_request():
    recorder = Recorder()

    async def main():
        batcher = Batcher(
            "t",
            rows_for,
            max_batch_size=16,
            max_wait_ms=50,
            per_item_errors=(BadItem,),
            observer=recorder,
        )
        await batcher.start()
        try:
            return await asyncio.gather(
                *(batcher.submit(i) for i in (1, 2, -1, 3)), return_exceptions=True
            )
        finally:
            await batcher.stop()

    one, two, bad, three = run(main())
    assert isinstance(bad, BadItem)
    assert [one[0], two[0], three[0]] == [1, 2, 3]


def test_an_unexpected_failure_reaches_every_caller_of_that_batch():
    def broken(items: list[int]) -> np.ndarray:
        raise RuntimeError("model crashed")

    results = submit_all(
        Batcher("t", broken, max_batch_size=4, max_wait_ms=20), range(3), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)


def test_wrong_row_count_is_an_error_not_a_mixup():
    async def main():
        batcher = Batcher("t", lambda items: np.zeros((1, 2)), max_batch_size=4, max_wait_ms=20)
        await batcher.start()
        try:
            return await asyncio.gather(
                *(batcher.submit(i) for i in range(3)), return_exceptions=True
            )
        finally:
            await batcher.stop()

    assert all(isinstance(r, RuntimeError) for r in run(main()))


@pytest.mark.parametrize("workers", [1, 2])
def test_not_started_and_stopped_batchers_refuse_work(workers):
    release = threading.Event()
    slow = blocked_until(release)

    async def main():
        batcher = Batcher("t", slow, max_batch_size=1, max_wait_ms=0, workers=workers)
        with pytest.raises(NotReady):
            await batcher.submit(1)
        await batcher.start()
        pending = [asyncio.ensure_future(batcher.submit(i)) for i in range(workers + 2)]
        await asyncio.sleep(0.05)
        assert len(batcher._running) == workers  # the rest are queued
        stopping = asyncio.ensure_future(batcher.stop())
        await asyncio.sleep(0.05)
        release.set()
        await stopping
        return await asyncio.gather(*pending, return_exceptions=True)

    results = run(main())
    assert all(isinstance(r, NotReady) for r in results)


def test_invalid_sizes_are_refused():
    with pytest.raises(ValueError, match="max_batch_size"):
        Batcher("t", rows_for, max_batch_size=0)
    with pytest.raises(ValueError, match="workers"):
        Batcher("t", rows_for, workers=0)


class Unforeseen(TypeError):
    """Not a bad-input error the batcher was told about."""


def test_an_error_of_any_class_fails_only_its_own_request():
    """Issue 29, finding 3: the tokenizer's TypeError for a lone surrogate failed every
    request in the batch, because only the listed error classes were retried one by one."""

    def picky(items: list[int]) -> np.ndarray:
        if 13 in items:
            raise Unforeseen("cannot handle 13")
        return rows_for(items)

    recorder = Recorder()

    async def main():
        batcher = Batcher(
            "t",
            picky,
            max_batch_size=16,
            max_wait_ms=50,
            per_item_errors=(BadItem,),
            observer=recorder,
        )
        await batcher.start()
        try:
            return await asyncio.gather(
                *(batcher.submit(i) for i in (1, 2, 13, 3, -1)), return_exceptions=True
            )
        finally:
            await batcher.stop()

    one, two, thirteen, three, negative = run(main())
    assert isinstance(thirteen, Unforeseen)
    assert isinstance(negative, BadItem)
    assert [one.tolist(), two.tolist(), three.tolist()] == [[1, 2], [2, 4], [3, 6]]
    assert max(recorder.sizes) == 1  # the good ones were answered item by item


def test_a_lone_surrogate_in_the_real_tokenizer_fails_only_its_own_text(tiny_embedder):
    """The reproduction itself, through the engine and the tiny model's real tokenizer
    (the HTTP edge now refuses such text before it gets here; this is the second line)."""
    from service.engine import EmbeddingEngine, Input
    from service.settings import Settings

    engine = EmbeddingEngine(tiny_embedder, Settings(preset="tiny", max_wait_ms=50))
    texts = [f"good text {i}" for i in range(29)] + ["x \ud800"]

    async def main():
        await engine.start()
        try:
            return await asyncio.gather(
                *(engine.embed_one(Input("text", t)) for t in texts), return_exceptions=True
            )
        finally:
            await engine.stop()

    results = run(main())
    assert isinstance(results[-1], TypeError)
    good = np.stack(results[:-1])
    assert good.shape == (29, 512)
    np.testing.assert_allclose(np.linalg.norm(good, axis=1), 1.0, atol=1e-4)
    alone = tiny_embedder.embed_texts(["good text 0"], dims=512)[0]
    np.testing.assert_allclose(good[0], alone, atol=1e-4)
