"""Decoding options as every runner takes them from its users: the command line's flags, and the comma-separated
hotword lists of HTTP fields, realtime query parameters and batch columns."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from model.decoding import MAX_BEAM_SIZE, DecodingOptions


def split_hotwords(lists: Iterable[str | None]) -> list[str]:
    """Comma-separated hotword lists ("kowalski, new york:2") -> their phrases, in order."""
    return [phrase.strip() for text in lists if text for phrase in text.split(",") if phrase.strip()]


def beam_size(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_BEAM_SIZE:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to {MAX_BEAM_SIZE}, got {text!r}")
    return int(text)


def add_decoding_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hotwords",
        action="append",
        metavar="LIST",
        help="words to recognise: comma-separated phrases, each optionally PHRASE:WEIGHT (per-token reward in "
        "(0, 10], default 3); repeatable",
    )
    parser.add_argument(
        "--beam-size", type=beam_size, default=None, help="beam search width (default: 1, greedy; 4 with hotwords)"
    )
    parser.add_argument(
        "--lm", metavar="FILE", help="KenLM word language model, ARPA or binary (CTC; pip install kenlm)"
    )
    parser.add_argument("--lm-alpha", type=float, default=DecodingOptions.lm_alpha, help="language model weight")
    parser.add_argument("--lm-beta", type=float, default=DecodingOptions.lm_beta, help="bonus per word with --lm")


def decoding_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The flags as `Parakeet.transcribe`'s (and BatchConfig's) keyword arguments."""
    return {
        "hotwords": tuple(split_hotwords(args.hotwords or ())),
        "beam_size": args.beam_size,
        "lm": args.lm,
        "lm_alpha": args.lm_alpha,
        "lm_beta": args.lm_beta,
    }
