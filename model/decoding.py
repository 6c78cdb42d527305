"""Greedy CTC decoding and word timestamps from CTC frames."""

from __future__ import annotations

from dataclasses import dataclass

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


def greedy_ctc(logits: torch.Tensor, lengths: torch.Tensor, blank_id: int) -> list[list[TokenSpan]]:
    """Best path per frame, repeats merged, blanks dropped: one list of token spans per batch row."""
    best = logits.argmax(dim=-1).cpu()
    results = []
    for row, length in zip(best.tolist(), lengths.tolist()):
        spans: list[TokenSpan] = []
        previous = blank_id
        for frame, token in enumerate(row[:length]):
            if token == previous and token != blank_id:
                spans[-1] = TokenSpan(token, spans[-1].start, frame)
            elif token != blank_id:
                spans.append(TokenSpan(token, frame, frame))
            previous = token
        results.append(spans)
    return results


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
