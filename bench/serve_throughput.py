"""Throughput and latency of the Serve app over HTTP against the model called in-process, on the same audio.

    python bench/serve_throughput.py                 # embedded model, CPU, 48 synthesised clips
    python bench/serve_throughput.py --model DIR --clips 96 --concurrency 32

Prints one markdown table (for BENCHMARKS.md): audio seconds per wall second (RTFx) and request latency.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import requests
import soundfile
import torch

from model import load_model
from recipe.sentences import sentence_pool
from recipe.synthesize import available_voices, synthesize

PORT = 8124


def flac_bytes(audio: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, 16000, format="FLAC")
    return buffer.getvalue()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def row(name: str, audio_seconds: float, wall: float, latencies: list[float]) -> str:
    return (
        f"| {name} | {audio_seconds / wall:.1f} | {statistics.median(latencies) * 1000:.0f} | "
        f"{percentile(latencies, 95) * 1000:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--compile", action="store_true", help="torch.compile the encoder on CPU too (slow start)")
    args = parser.parse_args()

    voices = available_voices()
    sentences = sentence_pool(args.clips, seed=7)
    clips = [synthesize(text, voices[i % len(voices)]) for i, text in enumerate(sentences)]
    payloads = [flac_bytes(clip) for clip in clips]
    audio_seconds = sum(len(c) for c in clips) / 16000
    print(
        f"{len(clips)} clips, {audio_seconds:.0f} s of audio; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}"
    )

    model = load_model(args.model)
    model.transcribe(clips[:2])  # warm-up
    started = time.perf_counter()
    model.transcribe(clips)
    batched_wall = time.perf_counter() - started
    latencies = []
    for clip in clips:
        started = time.perf_counter()
        model.transcribe(clip)
        latencies.append(time.perf_counter() - started)
    sequential_wall = sum(latencies)

    import ray
    from ray import serve

    from deployments.app import build_app

    ray.init(include_dashboard=False, logging_level="ERROR")
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    serve.run(
        build_app({"model": args.model, "device": "cpu", "compile": args.compile or None}),
        name="bench",
        route_prefix="/",
    )

    def post(data: bytes) -> float:
        started = time.perf_counter()
        answer = requests.post(
            f"http://127.0.0.1:{PORT}/v1/audio/transcriptions", files={"file": ("a.flac", data)}, timeout=600
        )
        answer.raise_for_status()
        return time.perf_counter() - started

    for data in payloads[:4]:
        post(data)  # warm connections and replicas
    serial = [post(data) for data in payloads]
    started = time.perf_counter()
    with ThreadPoolExecutor(args.concurrency) as pool:
        concurrent = list(pool.map(post, payloads))
    concurrent_wall = time.perf_counter() - started
    serve.shutdown()
    ray.shutdown()

    print("\n| runner | RTFx (audio s / wall s) | p50 latency ms | p95 latency ms |")
    print("|---|---|---|---|")
    print(row("in-process `model.transcribe`, one clip at a time", audio_seconds, sequential_wall, latencies))
    print(f"| in-process `model.transcribe`, all clips, batch 8 | {audio_seconds / batched_wall:.1f} | - | - |")
    print(row("Serve over HTTP, one request at a time", audio_seconds, sum(serial), serial))
    print(row(f"Serve over HTTP, {args.concurrency} concurrent requests", audio_seconds, concurrent_wall, concurrent))


if __name__ == "__main__":
    main()
