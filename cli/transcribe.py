"""`parakeet transcribe`: audio files -> transcripts on stdout (or one file each under --output-dir).

Every input gets its answer, in the order given: its transcript, or an error line naming it on stderr (and, in
json, an `{"file", "error"}` line in its place); the exit code is 1 when any input failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from model import AudioError, Transcript, load_model
from model.stages import Buckets
from pipeline.formats import FORMATS, render
from pipeline.options import add_decoding_arguments, decoding_arguments

SUFFIXES = {"text": ".txt", "json": ".json", "srt": ".srt", "vtt": ".vtt"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="audio files (wav, flac, ogg, mp3, ...)")
    parser.add_argument("--model", default=None, help="checkpoint directory or Hub repo id (default: embedded model)")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="text",
        help="text: one line per file; json: one JSON object per line; srt, vtt: subtitles",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="write one file per input here (NAME.txt, .json, .srt or .vtt) instead of to stdout; "
        "needed for srt and vtt of several files",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=Buckets().max_batch_size,
        help="windows encoded together (default: %(default)s)",
    )
    parser.add_argument("--int8", action="store_true", help="int8 dynamic quantisation of the linear layers (CPU)")
    add_decoding_arguments(parser)


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def output_paths(files: list[str], directory: Path, kind: str) -> list[Path]:
    """One output file per input, named after it; two inputs of the same name would overwrite each other."""
    paths = [directory / (Path(file).stem + SUFFIXES[kind]) for file in files]
    seen: dict[Path, str] = {}
    for file, path in zip(files, paths):
        if path in seen:
            raise ValueError(f"{seen[path]} and {file} would both be written to {path}; transcribe them separately")
        seen[path] = file
    return paths


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Silence what C libraries print to the process's stderr (libsndfile's mpg123 says "Note: Illegal
    Audio-MPEG-Header" of undecodable bytes); our own errors say what went wrong, once."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def results(args: argparse.Namespace) -> Iterator[Transcript | AudioError]:
    """Each file's result in order, decoding with C libraries' chatter silenced."""
    model = load_model(args.model, quantize="int8" if args.int8 else None, buckets=Buckets((args.batch_size,)))
    each = model.transcribe_each(args.files, **decoding_arguments(args))
    while True:
        with native_stderr_silenced():
            result = next(each, None)
        if result is None:
            return
        yield result


def answer(file: str, result: Transcript | AudioError, kind: str, several: bool) -> str:
    """What stdout shows of one input; errors go to stderr as well."""
    if kind == "json":
        fields = {"error": str(result)} if isinstance(result, AudioError) else asdict(result)
        return json.dumps({"file": file, **fields}) + "\n"
    if isinstance(result, AudioError):
        return ""
    return f"{file}: {render(result, kind)}" if several and kind == "text" else render(result, kind)


def execute(args: argparse.Namespace) -> int:
    several = len(args.files) > 1
    if several and args.format in ("srt", "vtt") and args.output_dir is None:
        raise ValueError(f"{args.format} of several files needs --output-dir DIR (one {SUFFIXES[args.format]} each)")
    paths = output_paths(args.files, args.output_dir, args.format) if args.output_dir else None
    if args.output_dir:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    for index, (file, result) in enumerate(zip(args.files, results(args))):
        if isinstance(result, AudioError):
            failed += 1
            print(f"parakeet: error: {result}", file=sys.stderr, flush=True)
        if paths is None:
            sys.stdout.write(answer(file, result, args.format, several))
            sys.stdout.flush()
        elif not isinstance(result, AudioError):
            paths[index].write_text(render(result, args.format))
    if failed:
        print(f"parakeet: {failed} of {len(args.files)} files failed", file=sys.stderr)
    return 1 if failed else 0
