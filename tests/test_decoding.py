"""Greedy CTC decoding, word timestamps and the output formats, on hand-made logits and tokens."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers

from model import Transcript, Word
from model.decoding import TokenSpan, greedy_ctc, timed_words
from model.tokenizer import Tokenizer
from pipeline.formats import render

PIECES = ["<unk>", "\u2581he", "llo", "\u2581wor", "ld", "\u2581a", "<pad>"]
BLANK = len(PIECES) - 1


def tiny_tokenizer() -> Tokenizer:
    tokenizer = HFTokenizer(models.BPE(vocab={p: i for i, p in enumerate(PIECES)}, merges=[], unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.add_special_tokens(["<pad>"])
    return Tokenizer(tokenizer, blank_id=BLANK)


def one_hot(frames: list[int]) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(frames), len(PIECES)).float()


def test_greedy_merges_repeats_drops_blanks_and_respects_lengths() -> None:
    b = BLANK
    rows = [[1, 1, b, 2, 2, 2, b, 3, 3, 4], [5, b, 5, 5, b, b, b, b, 1, 1]]
    logits = torch.stack([one_hot(row) for row in rows])
    spans = greedy_ctc(logits, torch.tensor([10, 5]), BLANK)
    assert spans[0] == [TokenSpan(1, 0, 1), TokenSpan(2, 3, 5), TokenSpan(3, 7, 8), TokenSpan(4, 9, 9)]
    # A blank separates two emissions of the same token; frames past the length are ignored.
    assert spans[1] == [TokenSpan(5, 0, 0), TokenSpan(5, 2, 3)]


def test_words_and_timestamps() -> None:
    tokenizer = tiny_tokenizer()
    spans = [TokenSpan(1, 0, 1), TokenSpan(2, 3, 5), TokenSpan(3, 7, 8), TokenSpan(4, 9, 9)]
    assert tokenizer.decode([s.token_id for s in spans]) == "hello world"
    assert timed_words(spans, tokenizer, frame_seconds=0.08) == [
        (Word("hello", 0.0, 0.48), [1, 2]),
        (Word("world", 0.56, 0.8), [3, 4]),
    ]


def test_subtitle_and_json_formats() -> None:
    words = [Word("hello", 0.0, 0.48), Word("world", 0.56, 0.8), Word("again", 3.2, 3.6)]
    transcript = Transcript("hello world again", words, duration=4.0)
    assert render(transcript, "text") == "hello world again\n"
    assert render(transcript, "srt") == (
        "1\n00:00:00,000 --> 00:00:00,800\nhello world\n\n2\n00:00:03,200 --> 00:00:03,600\nagain\n"
    )
    assert render(transcript, "vtt") == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:00.800\nhello world\n\n00:00:03.200 --> 00:00:03.600\nagain\n"
    )
    assert render(transcript, "json") == (
        '{"text": "hello world again", "words": [{"word": "hello", "start": 0.0, "end": 0.48}, '
        '{"word": "world", "start": 0.56, "end": 0.8}, {"word": "again", "start": 3.2, "end": 3.6}], "duration": 4.0}\n'
    )
    assert render(Transcript("", [], 1.0), "srt") == ""
    assert render(Transcript("", [], 1.0), "vtt") == "WEBVTT\n"
