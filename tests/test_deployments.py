"""The deployments' options: the app's args and each stage's batching (user_config), validated and applied."""

from __future__ import annotations

import asyncio
import os
import threading

import numpy as np
import pytest

pytest.importorskip("ray.serve")

from deployments.batching import Batcher, WindowChunk, encode_in_chunks  # noqa: E402
from deployments.config import AppConfig, Batching  # noqa: E402
from deployments.encoder import EncoderDeployment  # noqa: E402
from pipeline.resources import cpu_threads  # noqa: E402


def test_batching_is_validated_naming_the_key() -> None:
    with pytest.raises(
        ValueError,
        match=r"unknown user_config key\(s\) batch_size; known: batch_wait_timeout_s, "
        r"max_batch_size",
    ):
        Batching.from_dict({"batch_size": 4})
    with pytest.raises(ValueError, match="batch_wait_timeout_s must be 0 to 10 seconds, got -1"):
        Batching.from_dict({"batch_wait_timeout_s": -1})
    with pytest.raises(ValueError, match="max_batch_size must be at least 1, got 0"):
        Batching.from_dict({"max_batch_size": 0})
    with pytest.raises(ValueError, match=r"unknown application option\(s\) decoder_batch_size"):
        AppConfig.from_dict({"decoder_batch_size": 8})
    with pytest.raises(ValueError, match="encoder_threads must be at least 1, got 0"):
        AppConfig.from_dict({"encoder_threads": 0})


def test_reconfigure_changes_a_replicas_batching_in_place(small_checkpoint) -> None:
    """What Serve calls with a deployment's new user_config, on the replica it has (no restart, no reload)."""
    replica = EncoderDeployment.func_or_class(AppConfig(model=str(small_checkpoint.directory), device="cpu"), "cpu")
    batcher = replica.batcher
    assert (batcher.max_size, batcher.wait_s) == (8, 0.0)  # the largest batch bucket
    replica.reconfigure({"batch_wait_timeout_s": 0.002, "max_batch_size": 4})
    assert (batcher.max_size, batcher.wait_s) == (4, 0.002)
    replica.reconfigure({})  # a user_config without a key sets that key's default
    assert (batcher.max_size, batcher.wait_s) == (8, 0.0)
    with pytest.raises(ValueError, match="max_batch_size must be at least 1, got 0"):
        replica.reconfigure({"max_batch_size": 0})


def test_the_encoders_batches_take_the_requests_with_fewer_windows_encoded_first(small_checkpoint) -> None:
    """A replica busy with a long request's first chunk: a short request that came after its second chunk runs in
    the next batch, and that chunk after it (a batch holds max_batch_size windows: 8)."""
    replica = EncoderDeployment.func_or_class(AppConfig(model=str(small_checkpoint.directory), device="cpu"), "cpu")
    batches: list[list[int]] = []
    release = threading.Event()

    def encode(requests: list[list[np.ndarray]], scored: list[bool]) -> list[list[np.ndarray]]:
        batches.append([len(windows) for windows in requests])
        release.wait(10)  # the first batch is busy while the others arrive
        return [[np.zeros(1, np.int32)] * len(windows) for windows in requests]

    replica.encoder.encode_isolating_failures = encode
    window = np.zeros((100, 80), np.float32)

    async def main() -> None:
        first = asyncio.ensure_future(replica.encode([[window] * 8], [False], [0]))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(replica.encode([[window] * 8], [False], [8]))
        await asyncio.sleep(0.05)
        short = asyncio.ensure_future(replica.encode([[window]]))
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.gather(first, second, short)

    asyncio.run(main())
    assert batches == [[8], [1], [8]]
    with pytest.raises(ValueError, match="2 requests, 1 scored flags and 2 windows_before"):
        asyncio.run(replica.encode([[window], [window]], [False]))  # a handle caller's lists that do not match


def run_batches(
    max_size: int, arrivals: list[list[int]], wait_s: float = 0.0, concurrency: int = 1, **sizing
) -> list[list]:
    """The batches a Batcher runs when `arrivals` come in waves, each wave while the batch before it runs
    (`sizing`: the Batcher's size and rank)."""
    batches: list[list[int]] = []
    release = asyncio.Event()

    async def run(items: list[int]) -> list[int]:
        batches.append(items)
        if len(batches) == 1:
            await release.wait()  # the first batch is busy while the other waves arrive
        return [item * 10 for item in items]

    async def main() -> list[int]:
        batcher = Batcher(run, max_size, wait_s, concurrency, **sizing)
        calls = [asyncio.create_task(batcher(item)) for item in arrivals[0]]
        await asyncio.sleep(0.01)
        for wave in arrivals[1:]:
            calls += [asyncio.create_task(batcher(item)) for item in wave]
            await asyncio.sleep(0.01)
        release.set()
        return await asyncio.gather(*calls)

    results = asyncio.run(main())
    assert results == [item * 10 for wave in arrivals for item in wave]  # every caller its own result
    return batches


def test_calls_that_queue_while_the_stage_is_busy_run_in_one_batch() -> None:
    """What `@serve.batch` (Ray 2.60) does not: it formed each batch as its first call came, one call each."""
    assert run_batches(8, [[1], [2], [3, 4], [5]]) == [[1], [2, 3, 4, 5]]
    assert run_batches(3, [[1], [2], [3, 4], [5]]) == [[1], [2, 3, 4], [5]]  # never more than max_size
    assert run_batches(8, [[1, 2, 3]], wait_s=0.005) == [[1, 2, 3]]  # those that came at once, together
    # Two runs at once: the second takes what came while the first was busy.
    assert run_batches(8, [[1], [2, 3]], concurrency=2) == [[1], [2, 3]]


def test_batches_hold_items_up_to_their_sizes_lowest_rank_first() -> None:
    """The Encoder's batches count windows, and take the chunks of requests with fewer windows encoded first."""
    sized = {"size": lambda item: item}
    assert run_batches(8, [[1], [5, 2, 4]], **sized) == [[1], [5, 2], [4]]  # first come, while they fit
    assert run_batches(4, [[1], [9, 1]], **sized) == [[1], [9], [1]]  # one over max_size runs alone
    ranked = {"rank": lambda item: item}
    assert run_batches(2, [[1], [30, 10, 2]], **ranked) == [[1], [2, 10], [30]]
    ranked_by_tens = {"rank": lambda item: item // 10}
    assert run_batches(8, [[1], [35, 31, 12, 14]], **ranked_by_tens) == [[1], [12, 14, 35, 31]]  # equals: first come


def test_a_long_requests_windows_go_in_ranked_chunks_two_at_a_time() -> None:
    """The ingress sends a request's windows in chunks of an Encoder batch, each ranked by the windows before it,
    two out at once; the outputs come back in the windows' order, and a chunk's failure is the request's."""
    sent: list[tuple[int, int]] = []
    out = [0, 0]  # chunks out now, most at once

    async def send(chunk: WindowChunk) -> list[np.ndarray] | Exception:
        sent.append((len(chunk.windows), chunk.before))
        out[0] += 1
        out[1] = max(out)
        await asyncio.sleep(0.01)
        out[0] -= 1
        if any(len(window) == 7 for window in chunk.windows):
            return ValueError("bad window")
        return [np.full(2, len(window)) for window in chunk.windows]

    windows = [np.zeros((length, 80), np.float32) for length in range(100, 120)]
    encoded = asyncio.run(encode_in_chunks(send, windows, False, 8, 2))
    assert [int(output[0]) for output in encoded] == list(range(100, 120))
    assert sorted(sent) == [(4, 16), (8, 0), (8, 8)] and out[1] == 2
    sent.clear()  # a streamed upload's window ranks by the windows before it
    asyncio.run(encode_in_chunks(send, windows[:1], False, 8, 2, before=5))
    assert sent == [(1, 5)]
    with pytest.raises(ValueError, match="bad window"):
        asyncio.run(encode_in_chunks(send, [np.zeros((7, 80), np.float32), *windows], False, 8, 2))


def test_a_failing_batch_fails_its_callers_alone_and_a_cancelled_call_is_left_out() -> None:
    seen: list[list[str]] = []

    async def run(items: list[str]) -> list[str]:
        seen.append(items)
        await asyncio.sleep(0.01)
        if "bad" in items:
            raise ValueError("bad batch")
        return items

    async def main() -> tuple[BaseException | str, ...]:
        batcher = Batcher(run, 8)
        first = asyncio.create_task(batcher("bad"))
        await asyncio.sleep(0)
        gone, kept = asyncio.create_task(batcher("gone")), asyncio.create_task(batcher("kept"))
        await asyncio.sleep(0)
        gone.cancel()
        return tuple(await asyncio.gather(first, kept, return_exceptions=True))

    bad, kept = asyncio.run(main())
    assert isinstance(bad, ValueError) and str(bad) == "bad batch"
    assert kept == "kept"
    assert seen == [["bad"], ["kept"]]


def test_a_batch_cancelled_inside_its_run_cancels_its_callers_and_the_next_call_is_still_run() -> None:
    async def run(items: list[str]) -> list[str]:
        if "cancelled" in items:
            raise asyncio.CancelledError  # as an awaited call cancelled under it raises, ending the runner task
        return items

    async def main() -> tuple[BaseException | str, str]:
        batcher = Batcher(run, 8)
        first = await asyncio.gather(batcher("cancelled"), return_exceptions=True)
        return first[0], await asyncio.wait_for(batcher("next"), 5)

    first, following = asyncio.run(main())
    assert isinstance(first, asyncio.CancelledError)
    assert following == "next"


def test_a_cpu_encoder_takes_every_core_unless_told(small_checkpoint, monkeypatch) -> None:
    """Ray sets OMP_NUM_THREADS=1 in its workers; the encoder chooses its own threads (pipeline.resources), a call's
    batches side by side on them, light model or heavy."""
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    for asked, expected in ((None, 2), (3, 3)):
        options = AppConfig(model=str(small_checkpoint.directory), device="cpu", encoder_threads=asked)
        assert EncoderDeployment.func_or_class(options, "cpu").encoder.threads == expected
    assert cpu_threads(1) == 1  # asked for
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # os.cpu_count() may not know
    assert cpu_threads(None) == 1


def test_a_local_ray_gets_serves_throughput_mode_on_free_ports(monkeypatch) -> None:
    import socket

    from pipeline import resources

    for name in resources.HAPROXY_PORTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(resources, "haproxy_found", lambda: True)
    with socket.socket() as holder:
        holder.bind(("", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        monkeypatch.setitem(resources.HAPROXY_PORTS, "RAY_SERVE_HAPROXY_STATS_PORT", taken)
        environment = resources.serve_environment()
    assert environment["RAY_SERVE_ENABLE_HA_PROXY"] == environment["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert int(environment["RAY_SERVE_HAPROXY_STATS_PORT"]) not in (taken, 0)  # another Ray's is left to it
    assert set(resources.HAPROXY_PORTS) <= set(environment)

    monkeypatch.setattr(resources, "haproxy_found", lambda: False)
    # No HAProxy here: Serve's own proxy.
    assert resources.serve_environment() == {**resources.THROUGHPUT_MODE, **resources.CONTROL_LOOP}
