"""The `parakeet` command: on top of every layer (model, pipeline, deployments), imported by none of them."""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import socket
import sys
import time


def convert(args: argparse.Namespace) -> int:
    from model.nemo import convert_nemo

    model = convert_nemo(args.nemo_file, args.output)
    print(
        f"parakeet: wrote {type(model.config).__name__.removesuffix('Config')} model "
        f"({sum(p.numel() for p in model.network.parameters()) / 1e6:.1f} M parameters) to {args.output}",
        file=sys.stderr,
    )
    return 0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def check_port_free(host: str, port: int) -> None:
    """Raise ValueError, naming the port, when something on this machine already listens on it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed connection's TIME_WAIT is no user
        try:
            probe.bind((host, port))
        except OSError as err:
            if err.errno != errno.EADDRINUSE:
                raise ValueError(f"cannot listen on {host}:{port}: {err.strerror}") from None
            raise ValueError(
                f"port {port} on {host} is in use (another `parakeet serve`?); stop it or choose another --port"
            ) from None


def serve(args: argparse.Namespace) -> int:
    from deployments.auth import API_KEY_ENV, collect_keys

    api_keys = collect_keys(key_file=args.api_key_file)
    if not api_keys and not is_loopback(args.host) and not args.insecure:
        raise ValueError(
            f"--host {args.host} lets other machines in, and no API key is set: give --api-key-file FILE or "
            f"${API_KEY_ENV}, or --insecure to serve without keys"
        )
    if not os.environ.get("RAY_ADDRESS"):  # Ray starts here, and so does the HTTP proxy on this port
        check_port_free(args.host, args.port)

    from ray import serve as ray_serve

    from deployments.app import build_app
    from pipeline.resources import start_ray

    # A busy small machine can take longer than Serve's 5 s default to start the HTTP proxy.
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")
    ray_context = start_ray()
    compile_encoder = {"auto": None, "on": True, "off": False}[args.compile]
    app = build_app({"model": args.model, "device": args.device, "compile": compile_encoder, "api_keys": api_keys})
    ray_serve.start(http_options={"host": args.host, "port": args.port})
    ray_serve.run(app, name="parakeet", route_prefix="/")
    access = f"{len(api_keys)} API key(s)" if api_keys else "no API key: open to every client that reaches it"
    print(
        f"parakeet: serving on http://{args.host}:{args.port} (POST /v1/audio/transcriptions), {access}; Ctrl-C stops",
        file=sys.stderr,
    )
    if ray_context.dashboard_url:
        # Ray's own commands find the token of a token-authenticated Ray (~/.ray/auth_token) only when told to.
        auth = "RAY_AUTH_MODE=token " if os.environ.get("RAY_AUTH_MODE") == "token" else ""
        print(
            f"parakeet: Ray dashboard http://{ray_context.dashboard_url}; `{auth}serve status --address "
            f"http://{ray_context.dashboard_url}`, `{auth}ray status --address "
            f"{ray_context.address_info['gcs_address']}`",
            file=sys.stderr,
        )
    sys.stderr.flush()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        ray_serve.shutdown()
    return 0


def build_parser() -> argparse.ArgumentParser:
    # Imported here, not above, so that Ctrl-C in the seconds torch and Ray take to import ends as quietly as later.
    from cli import stream, transcribe
    from pipeline import batch, dataset
    from pipeline.resources import DEVICES

    parser = argparse.ArgumentParser(prog="parakeet", description="Parakeet speech-to-text.")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("transcribe", help="transcribe audio files")
    transcribe.add_arguments(command)
    command.set_defaults(run=transcribe.execute)

    command = commands.add_parser(
        "convert",
        help="convert a NeMo .nemo checkpoint (CTC, RNN-T, TDT) into the Hugging Face layout that --model takes",
    )
    command.add_argument("nemo_file", metavar="NEMO_FILE")
    command.add_argument("output", metavar="OUT_DIR")
    command.set_defaults(run=convert)

    command = commands.add_parser("serve", help="run the Ray Serve app (HTTP API) on this machine or RAY_ADDRESS")
    command.add_argument("--model", default=None, help="checkpoint directory or Hub repo id (default: embedded model)")
    command.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default: this machine only; 0.0.0.0: every one)"
    )
    command.add_argument("--port", type=int, default=8000)
    command.add_argument(
        "--api-key-file",
        metavar="FILE",
        help="API keys clients must send as `Authorization: Bearer KEY`, one a line (also: $PARAKEET_API_KEY)",
    )
    command.add_argument(
        "--insecure", action="store_true", help="allow a non-loopback --host without API keys: anyone reaching it"
    )
    command.add_argument(
        "--device", choices=DEVICES, default="auto", help="encoder device; auto uses GPUs when the cluster has them"
    )
    command.add_argument(
        "--compile",
        choices=("auto", "on", "off"),
        default="auto",
        help="torch.compile the encoder: auto compiles on cuda only (CPU warm-up takes minutes)",
    )
    command.set_defaults(run=serve)

    command = commands.add_parser("stream", help="play an audio file to a server's realtime endpoint, print its events")
    stream.add_arguments(command)
    command.set_defaults(run=stream.execute)

    command = commands.add_parser("batch", help="transcribe a parquet dataset with Ray Data (local Ray or RAY_ADDRESS)")
    batch.add_arguments(command)
    command.set_defaults(run=batch.execute)

    command = commands.add_parser("make-dataset", help="pack a directory of audio files into a parquet dataset")
    dataset.add_arguments(command)
    command.set_defaults(run=dataset.execute)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except ValueError as err:  # bad input or checkpoint: every such error names what was wrong
        print(f"parakeet: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as other command-line tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
        return 141
    except KeyboardInterrupt:
        print("parakeet: interrupted", file=sys.stderr)
        return 130
