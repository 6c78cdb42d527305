"""What the Encoder stage's batches cost on calls of windows of unlike lengths, as a Serve Encoder replica gets them
(the windows of the requests that queued together, in arrival order, not sorted by length as in-process calls are).

    python bench/encoder_batches.py                     # embedded model, 24 calls of 8 windows of 2-15 s, 1 thread
    python bench/encoder_batches.py --threads 2         # the replica's batches side by side on two threads
    python bench/encoder_batches.py --shape-0.6b --calls 3
    python bench/encoder_batches.py --batch-cost 100    # another cost of a batch for the like-length split

Prints one markdown row (for BENCHMARKS.md): the best of `--repeats` rounds over the same calls, the share of the
padded batches' frames that real frames fill, and the number of batches the calls ran in. Run it on an otherwise
idle machine; the features are random (the network's cost does not depend on their values).
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/...` from a checkout, as the others

from bench.model_speed import build_checkpoint  # noqa: E402
from model import stages  # noqa: E402
from model.stages import Buckets, Encoder  # noqa: E402

FRAMES_PER_SECOND = 100  # log-mel frames (10 ms hop)


def random_calls(encoder: Encoder, calls: int, per_call: int, seconds: tuple[float, float]) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(0)
    low, high = (int(s * FRAMES_PER_SECOND) for s in seconds)

    def window() -> np.ndarray:
        return rng.standard_normal((int(rng.integers(low, high + 1)), encoder.mels)).astype(np.float32)

    return [[window() for _ in range(per_call)] for _ in range(calls)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=24)
    parser.add_argument("--per-call", type=int, default=8, help="windows per call (an Encoder batch's)")
    parser.add_argument("--seconds", type=float, nargs=2, default=[2.0, 15.0], metavar=("SHORTEST", "LONGEST"))
    parser.add_argument("--threads", type=int, default=1, help="the Encoder's threads (model.stages.Encoder)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shape-0.6b", dest="shape_06b", action="store_true", help="random weights, 0.6b shape")
    parser.add_argument(
        "--batch-cost", type=int, help=f"padded frames a batch costs (default {stages.BATCH_COST_FRAMES})"
    )
    args = parser.parse_args()
    if args.batch_cost is not None:  # what Encoder.plan splits with, for this run
        stages.like_length_batches = functools.partial(stages.like_length_batches, batch_cost=args.batch_cost)
    with tempfile.TemporaryDirectory() as scratch:
        model = None
        if args.shape_06b:
            model = Path(scratch) / "ctc-0.6b"
            build_checkpoint(model, layers=24)
        encoder = Encoder.from_pretrained(model, Buckets(), threads=args.threads)
        calls = random_calls(encoder, args.calls, args.per_call, tuple(args.seconds))
        torch.set_num_threads(args.threads)
        for call in calls[:2]:  # warm-up
            encoder(call)
        best = float("inf")
        for _ in range(args.repeats):
            started = time.perf_counter()
            for call in calls:
                encoder(call)
            best = min(best, time.perf_counter() - started)
    plans = [encoder.plan(call) for call in calls]
    padded = sum(size * frames for plan in plans for _, (size, frames) in plan)
    real = sum(len(window) for call in calls for window in call)
    audio = real / FRAMES_PER_SECOND
    print("| calls x windows (seconds), threads | wall s (best) | audio s per wall s | fill ratio | batches |")
    print("|---|---|---|---|---|")
    print(
        f"| {args.calls} x {args.per_call} ({args.seconds[0]:g}-{args.seconds[1]:g} s), {args.threads} | {best:.2f} | "
        f"{audio / best:.1f} | {real / padded:.2f} | {sum(len(plan) for plan in plans)} |"
    )


if __name__ == "__main__":
    main()
