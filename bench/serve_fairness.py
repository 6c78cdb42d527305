"""Short requests beside a long one in the Serve app: how long a short clip waits while a long recording's windows
go through the Encoder, and what that costs the long one.

    python bench/serve_fairness.py                      # embedded model, CPU: a 25-minute recording, 2-5 s clips
    python bench/serve_fairness.py --long-minutes 60 --model DIR

Prints one markdown table (for BENCHMARKS.md): the short clips' latency alone and beside the long request (sent one
at a time from 1 s after it until it is answered), and the long request's own time alone and with them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/...` from a checkout, as the others

from bench.serve_throughput import PORT, flac_bytes, post, speech_clips  # noqa: E402

LEAD_SECONDS = 1.0  # the long request's head start: its upload read and featurized, its windows at the Encoder


def latency_row(name: str, latencies: list[float], long_seconds: float | None = None) -> str:
    shown = ["-"] * 3  # none: the long request was answered within LEAD_SECONDS (make it longer)
    if latencies:
        shown = [f"{value * 1000:.0f}" for value in (statistics.median(latencies), np.percentile(latencies, 95))]
        shown.append(f"{max(latencies) * 1000:.0f}")
    shown.append(str(len(latencies)))
    return f"| {name} | {' | '.join(shown)} | {'-' if long_seconds is None else f'{long_seconds:.2f}'} |"


def beside_long(long_payload: bytes, short_payloads: list[bytes]) -> tuple[float, list[float]]:
    """The long request, and short ones one at a time from LEAD_SECONDS after it until it is answered."""
    long_wall: list[float] = []
    long_request = threading.Thread(target=lambda: long_wall.append(post(long_payload)))
    long_request.start()
    time.sleep(LEAD_SECONDS)
    latencies = []
    while long_request.is_alive():
        latencies.append(post(short_payloads[len(latencies) % len(short_payloads)]))
    long_request.join()
    return long_wall[0], latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--long-minutes", type=float, default=25.0, help="the long recording's length")
    parser.add_argument("--clips", type=int, default=16, help="distinct short clips (2-5 s)")
    parser.add_argument("--rounds", type=int, default=3, help="long requests, with short ones beside each")
    args = parser.parse_args()

    shorts = [flac_bytes(clip) for clip in speech_clips(args.clips, 2.0, 5.0)]
    pieces = speech_clips(24, 20.0, 30.0)
    samples = int(args.long_minutes * 60 * 16000)
    long_audio = np.concatenate(pieces * (samples // sum(len(piece) for piece in pieces) + 1))[:samples]
    long_payload = flac_bytes(long_audio)
    print(
        f"a {len(long_audio) / 16000 / 60:.1f}-minute recording, {len(shorts)} short clips; {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )

    import ray
    from ray import serve

    from deployments.app import build_app
    from pipeline.resources import local_ray

    local_ray(include_dashboard=False, logging_level="ERROR")  # its own Ray, not a cluster's
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    serve.run(build_app({"model": args.model, "device": "cpu"}), name="bench", route_prefix="/")
    for payload in shorts[:4]:
        post(payload)  # warm connections and replicas
    post(long_payload)
    alone = [post(payload) for payload in shorts * 2]
    long_alone = [post(long_payload) for _ in range(args.rounds)]
    rounds = [beside_long(long_payload, shorts) for _ in range(args.rounds)]
    serve.shutdown()
    ray.shutdown()

    print("\n| requests | short p50 ms | short p95 ms | short max ms | short requests | long request s (median) |")
    print("|---|---|---|---|---|---|")
    print(latency_row("short clips alone, one at a time", alone))
    print(f"| the long request alone | - | - | - | - | {statistics.median(long_alone):.2f} |")
    beside = [latency for _, latencies in rounds for latency in latencies]
    long_beside = statistics.median(wall for wall, _ in rounds)
    print(latency_row("short clips one at a time beside the long request", beside, long_beside))


if __name__ == "__main__":
    main()
