"""Rendering transcripts as text, JSON, SRT and WebVTT (shared by the CLI and the HTTP API)."""

from __future__ import annotations

import json
import zlib
from collections.abc import Collection
from dataclasses import asdict

from model import Transcript, Word

FORMATS = ("text", "json", "srt", "vtt")
MAX_CUE_WORDS = 12
MAX_CUE_SECONDS = 6.0
CUE_BREAK_PAUSE = 0.8  # seconds of silence that start a new cue


def cues(words: list[Word]) -> list[list[Word]]:
    """Split words into subtitle cues at long pauses or when a cue grows too long."""
    groups: list[list[Word]] = []
    for word in words:
        if (
            not groups
            or len(groups[-1]) >= MAX_CUE_WORDS
            or word.end - groups[-1][0].start > MAX_CUE_SECONDS
            or word.start - groups[-1][-1].end > CUE_BREAK_PAUSE
        ):
            groups.append([word])
        else:
            groups[-1].append(word)
    return groups


def timestamp(seconds: float, decimal_mark: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_mark}{millis:03d}"


def to_subtitles(transcript: Transcript, kind: str) -> str:
    mark = "," if kind == "srt" else "."
    blocks = []
    for number, cue in enumerate(cues(transcript.words), start=1):
        timing = f"{timestamp(cue[0].start, mark)} --> {timestamp(cue[-1].end, mark)}"
        text = " ".join(word.word for word in cue)
        blocks.append(f"{number}\n{timing}\n{text}" if kind == "srt" else f"{timing}\n{text}")
    body = "\n\n".join(blocks)
    return (body + "\n" if body else "") if kind == "srt" else f"WEBVTT\n\n{body}\n" if body else "WEBVTT\n"


def segments(transcript: Transcript) -> list[dict]:
    """Subtitle-sized segments (the cues), with every field of OpenAI's verbose_json segments.

    `seek` is where the segment starts, in 10 ms frames (Whisper's unit); `tokens` are the token ids the model
    emitted for its words; `temperature` is 0 (decoding is greedy); `compression_ratio` is its text's zlib ratio, as
    Whisper computes it. `avg_logprob` and `no_speech_prob` are not computed: 0.0, the values of a confident
    segment, so that clients' Whisper-style filters (avg_logprob < -1, no_speech_prob > 0.6) keep every one."""
    word_tokens = iter(transcript.word_tokens or [() for _ in transcript.words])
    rows = []
    for number, cue in enumerate(cues(transcript.words)):
        text = " ".join(word.word for word in cue)
        rows.append(
            {
                "id": number,
                "seek": round(cue[0].start * 100),
                "start": cue[0].start,
                "end": cue[-1].end,
                "text": text,
                "tokens": [token for _ in cue for token in next(word_tokens)],
                "temperature": 0.0,
                "avg_logprob": 0.0,
                "compression_ratio": compression_ratio(text),
                "no_speech_prob": 0.0,
            }
        )
    return rows


def compression_ratio(text: str) -> float:
    data = text.encode()
    return round(len(data) / len(zlib.compress(data)), 4) if data else 0.0


def usage(transcript: Transcript) -> dict:
    """OpenAI's usage of audio billed by the second."""
    return {"type": "duration", "seconds": transcript.duration}


def verbose_json(transcript: Transcript, granularities: Collection[str] = ("segment",)) -> dict:
    """OpenAI's verbose_json transcription object; `granularities` picks "segment" and/or "word" timestamps."""
    response: dict = {
        "task": "transcribe",
        "language": "english",
        "duration": transcript.duration,
        "text": transcript.text,
    }
    if "segment" in granularities:
        response["segments"] = segments(transcript)
    if "word" in granularities:
        response["words"] = [asdict(word) for word in transcript.words]
    response["usage"] = usage(transcript)
    return response


def render(transcript: Transcript, kind: str) -> str:
    if kind == "text":
        return transcript.text + "\n"
    if kind == "json":
        words = [asdict(word) for word in transcript.words]
        return json.dumps({"text": transcript.text, "words": words, "duration": transcript.duration}) + "\n"
    if kind in ("srt", "vtt"):
        return to_subtitles(transcript, kind)
    raise ValueError(f"unknown format {kind!r}; choose one of {', '.join(FORMATS)}")
