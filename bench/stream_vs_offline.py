"""Streaming against offline decoding of the same long recording: issue 5's measure of how far a stream's final
transcript is from the offline one.

    python bench/stream_vs_offline.py                                  # embedded model, 24 sentences
    python bench/stream_vs_offline.py --model DIR --settings 0.8:7.6:1.6 0.8:5.6:3.6 --offline-windows 12:2

Unseen sentences in seen voices (recipe.synthesize.unseen_speech) back to back with 0.3 s pauses go through the
stages on one thread: offline as the Serve app windows long audio (the default buckets and context), and as a
stream (pipeline.streaming) fed 0.1 s at a time with each CHUNK:LEFT:LOOKAHEAD setting in seconds, and offline in
other windows (--offline-windows): how far two offline decodings in different windows already are from each other.
Prints, as a markdown table, each transcript's WER against the reference and against the offline transcript.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/...` from a checkout, as the others

from bench.long_audio_windows import window_setting, windowed_text  # noqa: E402
from model import SAMPLE_RATE, load_model  # noqa: E402
from pipeline.streaming import Stream, StreamSettings, run_stream  # noqa: E402
from recipe.metrics import word_error_rate  # noqa: E402
from recipe.synthesize import back_to_back, unseen_speech  # noqa: E402

PAUSE_SECONDS = 0.3
FEED_SECONDS = 0.1


def stream_setting(text: str) -> StreamSettings:
    """ "CHUNK:LEFT:LOOKAHEAD" in seconds -> StreamSettings."""
    try:
        return StreamSettings(*(float(value) for value in text.split(":")))
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"expected CHUNK:LEFT:LOOKAHEAD in seconds, e.g. 0.8:7.6:1.6, got {text!r}"
        ) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="checkpoint directory (default: the embedded model)")
    parser.add_argument("--sentences", type=int, default=24, help="sentences in the recording")
    parser.add_argument(
        "--settings",
        nargs="+",
        type=stream_setting,
        metavar="CHUNK:LEFT:LOOKAHEAD",
        default=[StreamSettings(), StreamSettings(0.8, 5.6, 3.6), StreamSettings(2.4, 5.6, 2.0)],
        help="stream settings in seconds (default: the Serve default and two others)",
    )
    parser.add_argument(
        "--offline-windows",
        nargs="*",
        type=window_setting,
        default=[(12, 2), (20, 4)],
        metavar="WINDOW:CONTEXT",
        help="other offline windows to compare with the Serve app's, in seconds",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    sentences, clips = unseen_speech(args.sentences)
    audio = back_to_back(clips, PAUSE_SECONDS)
    reference = " ".join(sentences)

    model = load_model(args.model)
    featurizer, encoder, decoder = model.pipeline.featurizer, model.pipeline.encoder, model.pipeline.decoder
    offline = model.transcribe(audio)[0].text

    print(f"| {args.sentences} sentences, {len(audio) / SAMPLE_RATE:.0f} s | WER | WER against offline | words |")
    print("|---|---|---|---|")
    print(
        f"| offline, {featurizer.window_samples / SAMPLE_RATE:g} s windows, "
        f"{featurizer.context_samples / SAMPLE_RATE:g} s context (the Serve app's) | "
        f"{word_error_rate([reference], [offline]):.1%} | - | {len(offline.split())} |"
    )
    hop_length = model.feature_config.hop_length
    for window, context in args.offline_windows:
        text = windowed_text(args.model, hop_length, audio, window, context)
        print(
            f"| offline, {window:g} s windows, {context:g} s context | {word_error_rate([reference], [text]):.1%} | "
            f"{word_error_rate([offline], [text]):.1%} | {len(text.split())} |"
        )
    feed = round(FEED_SECONDS * SAMPLE_RATE)
    for settings in args.settings:
        pieces = (audio[start : start + feed] for start in range(0, len(audio), feed))
        events = list(
            run_stream(Stream(featurizer, decoder, settings), pieces, lambda features: encoder([features])[0])
        )
        text = events[-1]["text"]
        name = (
            f"stream {settings.chunk_seconds:g} / {settings.left_context_seconds:g} / {settings.lookahead_seconds:g} s"
        )
        print(
            f"| {name} | {word_error_rate([reference], [text]):.1%} | {word_error_rate([offline], [text]):.1%} | "
            f"{len(text.split())} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
