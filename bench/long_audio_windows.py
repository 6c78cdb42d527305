"""Accuracy of a model on long audio cut into the Serve app's windows, against the same sentences one at a time.

    python bench/long_audio_windows.py                                # embedded model, 10 and 16 sentences
    python bench/long_audio_windows.py --model DIR --windows 30:2 12:2 6:1
    python bench/long_audio_windows.py --sentences 240 --windows 12:2 --seed 7   # other unseen sentences
    python bench/long_audio_windows.py --sentences 16 --voice flite:awb       # every sentence in one voice

Unseen sentences in seen voices (recipe.synthesize.unseen_speech; with the default seed the set of
tests/test_default_model.py; the six voices in turn unless --voice names one), put back to back with 0.25 s pauses,
go through the stages as the Serve app runs them: windows of WINDOW seconds that overlap by CONTEXT seconds on each
side. Prints the WER and CER of the sentences decoded one at a time (all of them, then those of each synthesiser's
voices), of the whole recording in one pass (no seams; left out when longer than the model can take) and of each
windowing, as a markdown table (for the model card).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/...` from a checkout, as the others

from model import SAMPLE_RATE, ConfigError, load_model  # noqa: E402
from model.stages import Buckets  # noqa: E402
from recipe.metrics import char_error_rate, word_error_rate  # noqa: E402
from recipe.synthesize import (  # noqa: E402
    UNSEEN_SEED,
    available_voices,
    back_to_back,
    unseen_speech,
    unseen_speech_voices,
    voice_named,
)

PAUSE_SECONDS = 0.25


def windowed_text(
    model: str | None, hop_length: int, audio: np.ndarray, window_seconds: float, context_seconds: float
) -> str:
    """The transcript of `audio` in windows of `window_seconds` overlapping by `context_seconds` on each side;
    raises ConfigError when such windows are longer than the model's position table."""
    frames = round(window_seconds * SAMPLE_RATE / hop_length)  # feature frames
    windowed = load_model(model, buckets=Buckets((1,), (frames,)), context_seconds=context_seconds)
    return windowed.transcribe(audio)[0].text


def window_setting(text: str) -> tuple[float, float]:
    """ "WINDOW:CONTEXT" in seconds -> (window, context)."""
    try:
        window, context = (float(value) for value in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WINDOW:CONTEXT in seconds, e.g. 12:2, got {text!r}") from None
    return window, context


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="checkpoint directory (default: the embedded model)")
    parser.add_argument("--sentences", type=int, nargs="+", default=[10, 16], help="sentences per recording")
    parser.add_argument(
        "--windows",
        nargs="+",
        type=window_setting,
        default=[(12, 2), (6, 1), (30, 2)],
        metavar="WINDOW:CONTEXT",
        help="window and context seconds",
    )
    parser.add_argument(
        "--seed", type=int, default=UNSEEN_SEED, help="seed of the unseen sentences (default: the tests')"
    )
    parser.add_argument(
        "--voice",
        default=None,
        metavar="ENGINE:NAME",
        help="read every sentence in this voice (default: the six seen voices in turn)",
    )
    args = parser.parse_args(argv)
    voice = None
    if args.voice is not None:
        try:
            voice = voice_named(args.voice, available_voices())
        except ValueError as error:
            parser.error(f"--voice {error}")
    sentences, clips = unseen_speech(max(args.sentences), args.seed, voice)
    model = load_model(args.model)
    hop = model.feature_config.hop_length
    print("| sentences | audio s | decoding | WER | CER | words |")
    print("|---|---|---|---|---|---|")
    for count in args.sentences:
        reference = " ".join(sentences[:count])
        audio = back_to_back(clips[:count], PAUSE_SECONDS)
        per_clip = [t.text for t in model.transcribe(clips[:count])]
        rows = [("one sentence at a time", reference, " ".join(per_clip))]
        engines = [speaker.engine for speaker in unseen_speech_voices(count, voice)]
        for engine in sorted(set(engines)) if len(set(engines)) > 1 else []:
            mine = [i for i, other in enumerate(engines) if other == engine]
            rows.append(
                (
                    f"one sentence at a time, {engine} voices only",
                    " ".join(sentences[i] for i in mine),
                    " ".join(per_clip[i] for i in mine),
                )
            )
        try:  # one window as long as the recording
            rows.append(
                (
                    "whole recording in one pass",
                    reference,
                    windowed_text(args.model, hop, audio, len(audio) / SAMPLE_RATE + 1, 0),
                )
            )
        except ConfigError as error:  # longer than the model's position table: windows only
            print(f"no one-pass row for {count} sentences: {error}", file=sys.stderr)
        rows += [
            (
                f"{window:g} s windows, {context:g} s context",
                reference,
                windowed_text(args.model, hop, audio, window, context),
            )
            for window, context in args.windows
        ]
        for name, truth, text in rows:
            print(
                f"| {count} | {len(audio) / SAMPLE_RATE:.0f} | {name} | {word_error_rate([truth], [text]):.1%} "
                f"| {char_error_rate([truth], [text]):.1%} | {len(text.split())} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
