"""The `parakeet` command."""

from __future__ import annotations

import argparse
import sys

from pipeline.formats import FORMATS, render


def transcribe(args: argparse.Namespace) -> int:
    from model import load_model  # torch import deferred so `parakeet --help` is instant

    model = load_model(args.model)
    for path, transcript in zip(args.files, model.transcribe(args.files, batch_size=args.batch_size)):
        if len(args.files) > 1 and args.format == "text":
            sys.stdout.write(f"{path}: ")
        sys.stdout.write(render(transcript, args.format))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parakeet", description="Parakeet speech-to-text.")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("transcribe", help="transcribe audio files")
    command.add_argument("files", nargs="+", metavar="FILE", help="audio files (wav, flac, ogg, mp3, ...)")
    command.add_argument("--model", default=None, help="checkpoint directory or Hub repo id (default: embedded model)")
    command.add_argument("--format", choices=FORMATS, default="text")
    command.add_argument("--batch-size", type=int, default=8)
    command.set_defaults(run=transcribe)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ValueError as err:  # bad input or checkpoint: every such error names what was wrong
        print(f"parakeet: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
