"""Latency of /v1/realtime streams played in real time, at 1, 8 and 32 concurrent streams.

    python bench/streaming_latency.py                        # embedded model, CPU, default streaming settings
    python bench/streaming_latency.py --streams 1 8 32 64 --seconds 60 --encoder-threads 1

Each stream plays its own synthesised speech at the pace of speech, starting at a random moment within the first
chunk. An event's latency is when it arrived minus when the last audio it covers (`end`) was sent; CPU-ms are
those of every process on the machine but this one (bench/pipeline_cost.py's meter) per second of audio streamed.
Prints one markdown table (for BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/...` from a checkout, as the others

from bench.pipeline_cost import Meter  # noqa: E402
from cli.stream import realtime_url, stream_audio  # noqa: E402
from pipeline.streaming import StreamSettings  # noqa: E402
from recipe.sentences import sentence_pool  # noqa: E402
from recipe.synthesize import available_voices, synthesize  # noqa: E402

PORT = 8126


def speech(seconds: float, seed: int) -> np.ndarray:
    """About `seconds` of sentences in rotating voices, 0.3 s apart (16 kHz float32)."""
    voices, parts, total = available_voices(), [], 0
    for i, text in enumerate(sentence_pool(int(seconds) // 2 + 2, seed=seed)):
        clip = synthesize(text, voices[(seed + i) % len(voices)])
        parts += [clip, np.zeros(4800, np.float32)]
        total += len(clip) + 4800
        if total >= seconds * 16000:
            break
    return np.concatenate(parts)[: int(seconds * 16000)]


async def one_stream(url: str, audio: np.ndarray, delay: float) -> dict:
    """Latencies of one stream's partial events, and whether it ended in `done`."""
    await asyncio.sleep(delay)
    latencies, first, steps, last = [], None, 0, None
    async for at, event in stream_audio(url, audio):
        last = event
        if event["type"] == "partial":
            steps += 1
            latencies.append(at - event["end"])
            first = at if first is None else first
    return {
        "latencies": latencies,
        "first": first,
        "steps": steps,
        "ok": last is not None and last["type"] == "done",
        "error": last.get("message") if last and last["type"] == "error" else None,
    }


async def run_level(url: str, clips: list[np.ndarray], count: int) -> list[dict]:
    rng = random.Random(count)
    return await asyncio.gather(*(one_stream(url, clips[i % len(clips)], rng.uniform(0, 0.8)) for i in range(count)))


def row(count: int, results: list[dict], seconds: float, cpu_seconds: float) -> str:
    latencies = [x for r in results for x in r["latencies"]]
    firsts = [r["first"] for r in results if r["first"] is not None]
    first_latency = [r["latencies"][0] for r in results if r["latencies"]]
    settings = StreamSettings()
    chunks = (seconds - settings.lookahead_seconds) // settings.chunk_seconds  # steps of one chunk each, at most
    chunks_per_step = chunks / max(1.0, float(np.mean([r["steps"] for r in results])))
    errors = sorted({r["error"] for r in results if r["error"]})
    pct = lambda values, q: f"{np.percentile(values, q):.2f}" if values else "-"  # noqa: E731
    return (
        f"| {count} | {sum(r['ok'] for r in results)}/{count} | {pct(firsts, 50)} | {pct(first_latency, 50)} | "
        f"{pct(first_latency, 95)} | {pct(latencies, 50)} | {pct(latencies, 95)} | {chunks_per_step:.1f} | "
        f"{1000 * cpu_seconds / (count * seconds):.1f} | {'; '.join(errors) or '-'} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=30.0, help="audio per stream")
    parser.add_argument("--encoder-threads", type=int, default=None, help="threads of the encoder (default: the app's)")
    args = parser.parse_args()

    clips = [speech(args.seconds, seed) for seed in range(8)]
    print(
        f"{args.seconds:.0f} s per stream; {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, load average {os.getloadavg()[0]:.1f} at start"
    )

    import ray
    from ray import serve

    from deployments.app import build_app
    from pipeline.resources import local_ray

    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")
    local_ray(num_cpus=2, include_dashboard=False, logging_level="ERROR")  # its own Ray, not a cluster's
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    options = {"model": args.model, "device": "cpu", "encoder_threads": args.encoder_threads}
    serve.run(build_app(options), name="bench", route_prefix="/")
    url = realtime_url(f"ws://127.0.0.1:{PORT}/v1/realtime")
    asyncio.run(run_level(url, clips[:1], 1))  # warm connections and replicas
    rows = []
    for count in args.streams:
        started = time.monotonic()
        with Meter() as meter:
            results = asyncio.run(run_level(url, clips, count))
        rows.append(row(count, results, args.seconds, meter.cpu))
        print(
            f"{count} streams: {time.monotonic() - started:.0f} s wall, load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    serve.shutdown()
    ray.shutdown()

    print(
        "\n| streams | completed | first partial, s after start (p50) | first-partial latency p50 s | p95 s "
        "| per-chunk latency p50 s | p95 s | chunks per step | CPU-ms per streamed audio s | errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
