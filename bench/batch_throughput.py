"""Throughput of the Ray Data batch job against a single-process loop over the same parquet dataset.

    python bench/batch_throughput.py                 # embedded model, CPU, 400 synthesised sentences
    python bench/batch_throughput.py --clips 2000 --mixed   # ~6000 s in rows of 2-30 s (sentences back to back)
    python bench/batch_throughput.py --clips 2000 --mixed --encoder-threads 1   # the encoder actor on one thread

Prints one markdown table (for BENCHMARKS.md): audio seconds per wall second (RTFx) of each runner, and when the
job's encoder actor worked: its first call after the job's start-up, its last, and its busy time.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import soundfile
import torch

from model import load_model
from model.stages import Buckets
from pipeline import batch
from pipeline.resources import local_ray
from recipe.corpus import read_parquet_audio
from recipe.sentences import sentence_pool
from recipe.synthesize import available_voices, back_to_back, write_corpus


class TimedEncodeRows(batch.EncodeRows):
    """The job's encoder actor, noting when each call starts and ends (epoch seconds) in $BENCH_ENCODER_TIMES."""

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        started = time.time()
        encoded = super().__call__(rows)
        with open(os.environ["BENCH_ENCODER_TIMES"], "a") as times:
            times.write(f"{started} {time.time()}\n")
        return encoded


def single_process(path: Path, model_dir: str | None, batch_size: int) -> float:
    """Read, decode and transcribe in one process, as a user's own loop would; returns wall seconds."""
    started = time.perf_counter()
    waveforms, _ = read_parquet_audio(path)
    load_model(model_dir, buckets=Buckets((batch_size,))).transcribe(waveforms)
    return time.perf_counter() - started


def mix_lengths(path: Path) -> None:
    """Rewrite the corpus at `path` as rows of 2 to 30 s: its clips back to back, a drawn length at a time."""
    table = pq.read_table(path, columns=["audio", "text"])
    rng = np.random.default_rng(11)
    rows: list[tuple[list[np.ndarray], list[str]]] = []
    target = 0.0
    for data, text in zip(table.column("audio").to_pylist(), table.column("text").to_pylist()):
        if not rows or sum(len(a) for a in rows[-1][0]) / 16000 >= target:
            rows.append(([], []))
            target = rng.uniform(2, 30)
        rows[-1][0].append(soundfile.read(io.BytesIO(data), dtype="float32")[0])
        rows[-1][1].append(text)
    audio, texts, durations = [], [], []
    for clips, words in rows:
        waveform = back_to_back(clips, 0.2)
        buffer = io.BytesIO()
        soundfile.write(buffer, waveform, 16000, format="FLAC")
        audio.append(buffer.getvalue())
        texts.append(" ".join(words))
        durations.append(len(waveform) / 16000)
    ids = [f"row-{index}" for index in range(len(rows))]
    pq.write_table(pa.table({"id": ids, "audio": audio, "text": texts, "duration": durations}), path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--clips", type=int, default=400, help="sentences synthesised")
    parser.add_argument("--mixed", action="store_true", help="rows of 2-30 s: the sentences back to back")
    parser.add_argument("--encoder-threads", type=int, help="threads of the job's encoder actor (default: the cores)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "clips.parquet"
        write_corpus(path, "clips", sentence_pool(args.clips, seed=11), available_voices(), seed=11, augmented=False)
        if args.mixed:
            mix_lengths(path)
        seconds = sum(pq.read_table(path, columns=["duration"]).column("duration").to_pylist())
        print(
            f"{args.clips} clips, {seconds:.0f} s of audio; {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, torch {torch.__version__}, ray {ray.__version__}",
            file=sys.stderr,
        )
        loop = single_process(path, args.model, batch_size=16)
        times_path = Path(scratch) / "encoder_times.txt"
        os.environ["BENCH_ENCODER_TIMES"] = str(times_path)  # the local Ray's workers inherit it
        started = time.perf_counter()
        local_ray(include_dashboard=False)  # its own Ray, not a cluster's
        ray_started, job_started = time.perf_counter(), time.time()
        output = str(Path(scratch) / "out")
        threads = args.encoder_threads
        config = batch.BatchConfig(input=str(path), output=output, model=args.model, encoder_threads=threads)
        batch.run(config, TimedEncodeRows)
        job = time.perf_counter() - ray_started
        whole = time.perf_counter() - started
        ray.shutdown()
        calls = [tuple(map(float, line.split())) for line in times_path.read_text().splitlines()]
    print("| runner | wall s | RTFx (audio s / wall s) |\n|---|---|---|")
    print(f"| single process: read, decode, `model.transcribe` batch 16 | {loop:.1f} | {seconds / loop:.1f} |")
    print(f"| `parakeet batch` on a local Ray (after `ray.init`) | {job:.1f} | {seconds / job:.1f} |")
    print(f"| `parakeet batch`, Ray's start included | {whole:.1f} | {seconds / whole:.1f} |")
    print(f"\nbatch job / single process: {loop / job:.2f}× after ray.init, {loop / whole:.2f}× in all")
    first, last = min(start for start, _ in calls) - job_started, max(end for _, end in calls) - job_started
    print(
        f"encoder actor: first call {first:.1f} s after the job started, last one ended at {last:.1f} s; "
        f"busy {sum(end - start for start, end in calls):.1f} s in {len(calls)} calls"
    )


if __name__ == "__main__":
    main()
