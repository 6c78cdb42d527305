"""The `parakeet` command."""

from __future__ import annotations

import argparse
import os
import sys
import time

from model import load_model
from model.nemo import convert_nemo
from pipeline import batch, dataset, stream_client
from pipeline.formats import FORMATS, render


def transcribe(args: argparse.Namespace) -> int:
    model = load_model(args.model, quantize="int8" if args.int8 else None)
    for path, transcript in zip(args.files, model.transcribe(args.files, batch_size=args.batch_size)):
        if len(args.files) > 1 and args.format == "text":
            sys.stdout.write(f"{path}: ")
        sys.stdout.write(render(transcript, args.format))
    return 0


def convert(args: argparse.Namespace) -> int:
    model = convert_nemo(args.nemo_file, args.output)
    print(f"parakeet: wrote {type(model.config).__name__.removesuffix('Config')} model "
          f"({sum(p.numel() for p in model.network.parameters()) / 1e6:.1f} M parameters) to {args.output}",
          file=sys.stderr)
    return 0


def serve(args: argparse.Namespace) -> int:
    import ray
    from ray import serve as ray_serve

    from deployments.app import build_app

    # A busy small machine can take longer than Serve's 5 s default to start the HTTP proxy.
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")
    ray.init()  # joins the cluster at RAY_ADDRESS if set, else starts a local one
    compile_encoder = {"auto": None, "on": True, "off": False}[args.compile]
    app = build_app({"model": args.model, "device": args.device, "compile": compile_encoder})
    ray_serve.start(http_options={"host": args.host, "port": args.port})
    ray_serve.run(app, name="parakeet", route_prefix="/")
    print(f"parakeet: serving on http://{args.host}:{args.port} (POST /v1/audio/transcriptions); Ctrl-C stops",
          file=sys.stderr, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        ray_serve.shutdown()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parakeet", description="Parakeet speech-to-text.")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("transcribe", help="transcribe audio files")
    command.add_argument("files", nargs="+", metavar="FILE", help="audio files (wav, flac, ogg, mp3, ...)")
    command.add_argument("--model", default=None, help="checkpoint directory or Hub repo id (default: embedded model)")
    command.add_argument("--format", choices=FORMATS, default="text")
    command.add_argument("--batch-size", type=int, default=8)
    command.add_argument("--int8", action="store_true", help="int8 dynamic quantisation of the linear layers (CPU)")
    command.set_defaults(run=transcribe)

    command = commands.add_parser("convert", help="convert a NeMo .nemo checkpoint (CTC, RNN-T, TDT) into the "
                                  "Hugging Face layout that --model takes")
    command.add_argument("nemo_file", metavar="NEMO_FILE")
    command.add_argument("output", metavar="OUT_DIR")
    command.set_defaults(run=convert)

    command = commands.add_parser("serve", help="run the Ray Serve app (HTTP API) on this machine or RAY_ADDRESS")
    command.add_argument("--model", default=None, help="checkpoint directory or Hub repo id (default: embedded model)")
    command.add_argument("--host", default="127.0.0.1")
    command.add_argument("--port", type=int, default=8000)
    command.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                         help="encoder device; auto uses GPUs when the cluster has them")
    command.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                         help="torch.compile the encoder: auto compiles on cuda only (CPU warm-up takes minutes)")
    command.set_defaults(run=serve)

    command = commands.add_parser("stream", help="play an audio file to a server's realtime endpoint, print its events")
    stream_client.add_arguments(command)
    command.set_defaults(run=stream_client.execute)

    command = commands.add_parser("batch", help="transcribe a parquet dataset with Ray Data (local Ray or RAY_ADDRESS)")
    batch.add_arguments(command)
    command.set_defaults(run=batch.execute)

    command = commands.add_parser("make-dataset", help="pack a directory of audio files into a parquet dataset")
    dataset.add_arguments(command)
    command.set_defaults(run=dataset.execute)
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
