"""Greedy CTC decoding and word timestamps from CTC frames."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from model.tokenizer import Tokenizer


@dataclass(frozen=True)
class TokenSpan:
    """One emitted token and the encoder frames [start, end] its run of repeats covers."""

    token_id: int
    start: int
    end: int


@dataclass(frozen=True)
class Word:
    word: str
    start: float  # seconds
    end: float  # seconds


@dataclass(frozen=True)
class Transcript:
    text: str
    words: list[Word] = field(default_factory=list)
    duration: float = 0.0  # seconds of input audio


def token_spans(best_path: Sequence[int], blank_id: int, offset: int = 0) -> list[TokenSpan]:
    """One row of per-frame best ids -> its tokens: repeats merged, blanks dropped; frames shifted by `offset`."""
    spans: list[TokenSpan] = []
    previous = blank_id
    for frame, token in enumerate(best_path, start=offset):
        if token == previous and token != blank_id:
            spans[-1] = TokenSpan(token, spans[-1].start, frame)
        elif token != blank_id:
            spans.append(TokenSpan(token, frame, frame))
        previous = token
    return spans


def best_paths(logits: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """(B, T, vocab) logits -> the valid part of each row's per-frame best ids."""
    best = logits.argmax(dim=-1).cpu()
    return [row[:length] for row, length in zip(best.tolist(), lengths.tolist())]


def greedy_ctc(logits: torch.Tensor, lengths: torch.Tensor, blank_id: int) -> list[list[TokenSpan]]:
    """Best path per frame, repeats merged, blanks dropped: one list of token spans per batch row."""
    return [token_spans(path, blank_id) for path in best_paths(logits, lengths)]


def words_from_spans(spans: list[TokenSpan], tokenizer: Tokenizer, frame_seconds: float) -> list[Word]:
    """Group tokens into words at SentencePiece word starts; a word spans its first to its last token's frames."""
    groups: list[list[TokenSpan]] = []
    for span in spans:
        if not groups or tokenizer.starts_word(span.token_id):
            groups.append([span])
        else:
            groups[-1].append(span)
    words = []
    for group in groups:
        text = tokenizer.decode([span.token_id for span in group]).strip()
        if text:
            words.append(Word(text, round(group[0].start * frame_seconds, 3), round((group[-1].end + 1) * frame_seconds, 3)))
    return words


def transcript_from_spans(
    spans: list[TokenSpan], tokenizer: Tokenizer, frame_seconds: float, duration: float
) -> Transcript:
    """Decoded token spans (frames counted from the start of the audio) -> text and timed words."""
    text = tokenizer.decode([span.token_id for span in spans])
    return Transcript(text, words_from_spans(spans, tokenizer, frame_seconds), duration)
