"""Pack a directory of audio files into a parquet dataset for the batch job: columns id (relative path), audio."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3"}  # what libsndfile decodes
SCHEMA = pa.schema([("id", pa.string()), ("audio", pa.binary())])
ROWS_PER_GROUP = 256  # files held in memory at once


def audio_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise ValueError(f"{directory}: not a directory")
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def make_dataset(directory: Path, output: Path) -> int:
    """Write every audio file under `directory` (recursively) as one row; returns the row count."""
    files = audio_files(directory)
    if not files:
        raise ValueError(f"{directory}: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
    output.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(output, SCHEMA) as writer:
        for start in range(0, len(files), ROWS_PER_GROUP):
            group = files[start : start + ROWS_PER_GROUP]
            ids = [path.relative_to(directory).as_posix() for path in group]
            writer.write_table(pa.table([ids, [path.read_bytes() for path in group]], schema=SCHEMA))
            print(f"\r{start + len(group)}/{len(files)} files", end="", file=sys.stderr)
    print(file=sys.stderr)
    return len(files)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, help="directory searched recursively for audio files")
    parser.add_argument("output", type=Path, help="parquet file to write")


def execute(args: argparse.Namespace) -> int:
    rows = make_dataset(args.directory, args.output)
    print(f"parakeet make-dataset: {rows} rows in {args.output}", file=sys.stderr)
    return 0
