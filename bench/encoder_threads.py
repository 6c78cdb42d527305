"""How a CPU encoder should use the cores: torch's threads on one batch at a time, or batches side by side on
threads of their own (one torch thread each), on idle cores and on cores another busy process shares.

    python bench/encoder_threads.py                  # embedded model, 400 sentences in rows of 2-30 s
    python bench/encoder_threads.py --clips 2000     # the batch job's 6440 s set (bench/batch_throughput.py --mixed)

The busy process stands in for the batch job's featurize tasks, which share the encoder actor's cores. Prints one
markdown table (for BENCHMARKS.md): wall seconds of each way over the same 64-row calls, as the job's actor makes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/...` from a checkout, as the others

from bench.batch_throughput import mix_lengths  # noqa: E402
from model.stages import Encoder  # noqa: E402
from pipeline.batch import BatchConfig, EncodeRows, featurize_rows  # noqa: E402
from recipe.sentences import sentence_pool  # noqa: E402
from recipe.synthesize import available_voices, write_corpus  # noqa: E402


def calls(path: Path, config: BatchConfig) -> list[dict]:
    table = pq.read_table(path)
    return [featurize_rows(table.slice(start, 64), config) for start in range(0, len(table), 64)]


def timed(actor: EncodeRows, batches: list[dict], torch_threads: int, threads: int | None, model: str | None) -> float:
    torch.set_num_threads(torch_threads)
    actor.encoder = Encoder.from_pretrained(model, actor.config.buckets, threads=threads)
    started = time.perf_counter()
    for batch in batches:
        actor(batch)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--clips", type=int, default=400, help="sentences synthesised, then put in rows of 2-30 s")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "clips.parquet"
        write_corpus(path, "clips", sentence_pool(args.clips, seed=11), available_voices(), seed=11, augmented=False)
        mix_lengths(path)
        config = BatchConfig(input=str(path), output=scratch, model=args.model)
        batches = calls(path, config)
    seconds = sum(float(duration) for batch in batches for duration in batch["duration"])
    actor = EncodeRows(config, "cpu")
    ways = [
        ("one batch at a time, 1 torch thread", 1, None),
        (f"one batch at a time, {cores} torch threads", cores, None),
        (f"{cores} batches side by side, 1 torch thread each", 1, cores),
    ]
    print(f"{len(batches)} calls, {seconds:.0f} s of audio, {cores} cores, torch {torch.__version__}", file=sys.stderr)
    print("| cores | way | wall s |\n|---|---|---|")
    for busy in (False, True):
        other = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            for name, torch_threads, threads in ways:
                wall = timed(actor, batches, torch_threads, threads, args.model)
                print(f"| {'one busy process beside' if busy else 'idle'} | {name} | {wall:.1f} |", flush=True)
        finally:
            if other:
                other.kill()


if __name__ == "__main__":
    main()
