"""Rendering transcripts as text, JSON, SRT and WebVTT (shared by the CLI and the HTTP API)."""

from __future__ import annotations

import json
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
    """Subtitle-sized segments (the cues) with their times, as the OpenAI verbose_json format lists them."""
    return [
        {"id": number, "seek": 0, "start": cue[0].start, "end": cue[-1].end, "text": " ".join(w.word for w in cue)}
        for number, cue in enumerate(cues(transcript.words))
    ]


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
    return response


def render(transcript: Transcript, kind: str) -> str:
    if kind == "text":
        return transcript.text + "\n"
    if kind == "json":
        return json.dumps(asdict(transcript)) + "\n"
    if kind in ("srt", "vtt"):
        return to_subtitles(transcript, kind)
    raise ValueError(f"unknown format {kind!r}; choose one of {', '.join(FORMATS)}")
