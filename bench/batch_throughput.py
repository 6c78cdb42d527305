"""Throughput of the Ray Data batch job against a single-process loop over the same parquet dataset.

    python bench/batch_throughput.py                 # embedded model, CPU, 400 synthesised clips
    python bench/batch_throughput.py --model DIR --clips 2000

Prints one markdown table (for BENCHMARKS.md): audio seconds per wall second (RTFx) of each runner.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import ray
import torch

from model import load_model
from model.stages import Buckets
from pipeline import batch
from recipe.corpus import read_parquet_audio
from recipe.sentences import sentence_pool
from recipe.synthesize import available_voices, write_corpus


def single_process(path: Path, model_dir: str | None, batch_size: int) -> float:
    """Read, decode and transcribe in one process, as a user's own loop would; returns wall seconds."""
    started = time.perf_counter()
    waveforms, _ = read_parquet_audio(path)
    load_model(model_dir, buckets=Buckets((batch_size,))).transcribe(waveforms)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--clips", type=int, default=400)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "clips.parquet"
        write_corpus(path, "clips", sentence_pool(args.clips, seed=11), available_voices(), seed=11, augmented=False)
        seconds = sum(pq.read_table(path, columns=["duration"]).column("duration").to_pylist())
        print(
            f"{args.clips} clips, {seconds:.0f} s of audio; {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, torch {torch.__version__}, ray {ray.__version__}",
            file=sys.stderr,
        )
        loop = single_process(path, args.model, batch_size=16)
        ray.init()
        started = time.perf_counter()
        batch.run(batch.BatchConfig(input=str(path), output=str(Path(scratch) / "out"), model=args.model))
        job = time.perf_counter() - started
        ray.shutdown()
    print("| runner | wall s | RTFx (audio s / wall s) |\n|---|---|---|")
    print(f"| single process: read, decode, `model.transcribe` batch 16 | {loop:.1f} | {seconds / loop:.1f} |")
    print(f"| `parakeet batch` on a local Ray (after `ray.init`) | {job:.1f} | {seconds / job:.1f} |")
    print(f"\nbatch job / single process: {loop / job:.2f}×")


if __name__ == "__main__":
    main()
