"""Throughput and latency of the Serve app over HTTP against the model called in-process, on the same audio.

    python bench/serve_throughput.py                          # embedded model, CPU, 48 clips of 2-15 s, 32 at once
    python bench/serve_throughput.py --shape-0.6b --seconds 10 10 --clips 64   # random weights, parakeet-ctc-0.6b
    python bench/serve_throughput.py --model DIR --clips 96 --concurrency 64
    python bench/serve_throughput.py --encoder-threads 2    # the Encoder replica's threads

Prints one markdown table (for BENCHMARKS.md): audio seconds per wall second (RTFx) and request latency, and the
ratios of Serve to in-process. Two rows say what the unloaded latency is made of: the in-process call on the torch
threads an Encoder replica gets (on a small machine fewer than the in-process call takes), and Serve's floor, an
ingress that only reads the upload (HTTP through Serve's proxy, nothing else). The concurrent load holds its
requests in flight only while clips are left: with fewer than twice as many clips as --concurrency, most of it is
the ramp up and down (the table says how many were in flight at most). The in-process call on all clips at once is
timed before the app starts and again after it stops, and Serve compared with the mean of the two: a run of minutes
sees the machine's pace drift, and the summary says by how much.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests
import soundfile
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/...` from a checkout, as the others

from bench.model_speed import build_checkpoint  # noqa: E402
from model import load_model  # noqa: E402
from pipeline.resources import cpu_threads  # noqa: E402
from recipe.sentences import sentence_pool
from recipe.synthesize import available_voices, back_to_back, synthesize

PORT = 8124


def flac_bytes(audio: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, 16000, format="FLAC")
    return buffer.getvalue()


def post(data: bytes) -> float:
    """One transcription over HTTP on PORT; its wall seconds."""
    started = time.perf_counter()
    answer = requests.post(
        f"http://127.0.0.1:{PORT}/v1/audio/transcriptions", files={"file": ("a.flac", data)}, timeout=3600
    )
    answer.raise_for_status()
    return time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def row(name: str, audio_seconds: float, wall: float, latencies: list[float]) -> str:
    return (
        f"| {name} | {audio_seconds / wall:.1f} | {statistics.median(latencies) * 1000:.0f} | "
        f"{percentile(latencies, 95) * 1000:.0f} |"
    )


def speech_clips(count: int, shortest: float, longest: float) -> list[np.ndarray]:
    """`count` clips of unseen sentences back to back, each cut to a length drawn from [shortest, longest] s."""
    voices = available_voices()
    rng = np.random.default_rng(7)
    sentences = iter(sentence_pool(20 * count, seed=7))
    clips = []
    for index in range(count):
        samples = int(rng.uniform(shortest, longest) * 16000)
        pieces: list[np.ndarray] = []
        while sum(len(piece) for piece in pieces) < samples:
            pieces.append(synthesize(next(sentences), voices[(index + len(pieces)) % len(voices)]))
        clips.append(back_to_back(pieces, 0.2)[:samples])
    return clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument(
        "--shape-0.6b",
        dest="big",
        action="store_true",
        help="random weights in the parakeet-ctc-0.6b shape instead of --model",
    )
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--seconds", type=float, nargs=2, default=[2.0, 15.0], metavar=("SHORTEST", "LONGEST"))
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--compile", action="store_true", help="torch.compile the encoder on CPU too (slow start)")
    parser.add_argument("--encoder-threads", type=int, help="threads of the Encoder replica (default: the app's)")
    args = parser.parse_args()
    if args.big:
        args.model = tempfile.mkdtemp(prefix="parakeet-0.6b-")
        build_checkpoint(Path(args.model), layers=24)

    clips = speech_clips(args.clips, *args.seconds)
    payloads = [flac_bytes(clip) for clip in clips]
    clips = [soundfile.read(io.BytesIO(payload), dtype="float32")[0] for payload in payloads]  # the same samples
    audio_seconds = sum(len(c) for c in clips) / 16000
    print(
        f"{len(clips)} clips, {audio_seconds:.0f} s of audio; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}, load average {os.getloadavg()[0]:.1f} at start"
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
    # The same on the torch threads an Encoder replica gets on this machine (pipeline/resources.py: cpu_threads).
    replica_threads = cpu_threads(args.encoder_threads)
    threads = torch.get_num_threads()
    torch.set_num_threads(replica_threads)
    on_replica_threads = []
    for clip in clips:
        started = time.perf_counter()
        model.transcribe(clip)
        on_replica_threads.append(time.perf_counter() - started)
    torch.set_num_threads(threads)

    import ray
    from ray import serve

    from bench.pipeline_cost import Floor
    from deployments.app import build_app
    from pipeline.resources import local_ray

    local_ray(include_dashboard=False, logging_level="ERROR")  # its own Ray, not a cluster's
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    serve.run(
        build_app(
            {
                "model": args.model,
                "device": "cpu",
                "compile": args.compile or None,
                "encoder_threads": args.encoder_threads,
            }
        ),
        name="bench",
        route_prefix="/",
    )

    for data in payloads[:4]:
        post(data)  # warm connections and replicas
    # The same in-process call with the app idle beside it: what Ray's and Serve's idle processes take from it.
    started = time.perf_counter()
    model.transcribe(clips)
    beside_wall = time.perf_counter() - started
    serial = [post(data) for data in payloads]
    started = time.perf_counter()
    with ThreadPoolExecutor(args.concurrency) as pool:
        concurrent = list(pool.map(post, payloads))
    concurrent_wall = time.perf_counter() - started
    in_flight = min(args.concurrency, len(payloads))
    serve.delete("bench")
    serve.run(Floor.bind(), name="floor", route_prefix="/")  # Serve's HTTP alone: an ingress that reads the upload
    for data in payloads[:4]:
        post(data)
    floor = [post(data) for data in payloads]
    serve.shutdown()
    ray.shutdown()
    # The in-process call alone once more, the machine's pace drifting over a run of minutes: Serve is measured
    # against the mean of the two, and the table says how far they are apart.
    started = time.perf_counter()
    model.transcribe(clips)
    after_wall = time.perf_counter() - started
    alone_wall = (batched_wall + after_wall) / 2
    if args.big:
        shutil.rmtree(args.model)

    print("\n| runner | RTFx (audio s / wall s) | p50 latency ms | p95 latency ms |")
    print("|---|---|---|---|")
    print(row("in-process `model.transcribe`, one clip at a time", audio_seconds, sequential_wall, latencies))
    print(
        row(
            f"the same on the Encoder replica's torch threads ({replica_threads})",
            audio_seconds,
            sum(on_replica_threads),
            on_replica_threads,
        )
    )
    print(f"| in-process `model.transcribe`, all clips at once | {audio_seconds / batched_wall:.1f} | - | - |")
    print(f"| the same, beside the idle Serve app | {audio_seconds / beside_wall:.1f} | - | - |")
    print(f"| the same alone again, after the Serve app stopped | {audio_seconds / after_wall:.1f} | - | - |")
    print(row("Serve over HTTP, one request at a time", audio_seconds, sum(serial), serial))
    print(row(f"Serve over HTTP, {in_flight} concurrent requests", audio_seconds, concurrent_wall, concurrent))
    print(row("Serve's floor (an ingress that only reads the upload), one at a time", audio_seconds, sum(floor), floor))
    print(
        f"\nServe at {in_flight} concurrent / in-process at once (the mean of before and after): "
        f"{alone_wall / concurrent_wall:.2f}x (in-process after / before: {batched_wall / after_wall:.2f}x; "
        f"beside the idle app / alone: {alone_wall / beside_wall:.2f}x); "
        f"unloaded p50: {(statistics.median(serial) - statistics.median(latencies)) * 1000:+.0f} ms "
        f"({(statistics.median(serial) - statistics.median(on_replica_threads)) * 1000:+.0f} ms against in-process "
        f"on the replica's threads; Serve's floor {statistics.median(floor) * 1000:.0f} ms)"
    )


if __name__ == "__main__":
    main()
