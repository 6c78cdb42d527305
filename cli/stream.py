"""`parakeet stream`: play audio to a server's /v1/realtime WebSocket at the pace of speech and print its events."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from model.audio import SAMPLE_RATE, load_audio
from pipeline.options import beam_size, split_hotwords
from pipeline.streaming import Event, StreamSettings

DEFAULT_URL = "ws://127.0.0.1:8000/v1/realtime"
FRAME_SECONDS = 0.1  # audio per binary frame


def realtime_url(
    url: str,
    settings: StreamSettings | None = None,
    sample_rate: int = SAMPLE_RATE,
    hotwords: list[str] | tuple[str, ...] = (),
    beam_size: int | None = None,
) -> str:
    """`url` with the query parameters of audio at `sample_rate`, `settings` (the server's defaults when None),
    and the stream's hotwords (phrases, each optionally PHRASE:WEIGHT) and beam size."""
    params = {"sample_rate": sample_rate, **(vars(settings) if settings else {})}
    if hotwords:
        params["hotwords"] = ",".join(hotwords)
    if beam_size is not None:
        params["beam_size"] = beam_size
    return f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"


def pcm16(audio: np.ndarray) -> bytes:
    """Float samples -> 16-bit little-endian PCM, rounded to the nearest step as libsndfile writes WAV and FLAC."""
    return np.rint(np.clip(audio, -1.0, 32767 / 32768) * 32768).astype("<i2").tobytes()


async def send_audio(websocket, audio: np.ndarray, speed: float, started: float) -> None:
    """Send `audio` in FRAME_SECONDS frames, each when its last sample would have been recorded (at `speed`×)."""
    step = int(FRAME_SECONDS * SAMPLE_RATE)
    for start in range(0, len(audio), step):
        await asyncio.sleep(max(0.0, started + (start + step) / SAMPLE_RATE / speed - time.monotonic()))
        await websocket.send(pcm16(audio[start : start + step]))
    await websocket.send(json.dumps({"type": "end"}))


async def stream_audio(url: str, audio: np.ndarray, speed: float = 1.0) -> AsyncIterator[tuple[float, Event]]:
    """Stream a 16 kHz waveform to `url` (from realtime_url) -> (seconds since the first frame was due, event), until
    the server closes. With `speed` 2 the audio is sent twice as fast as it plays."""
    async with connect(url, max_size=None) as websocket:
        started = time.monotonic()
        sender = asyncio.create_task(send_audio(websocket, audio, speed, started))
        try:
            async for message in websocket:
                yield time.monotonic() - started, json.loads(message)
        except ConnectionClosedError:
            pass  # after an error event, the server closes with its code; a dropped network ends here too
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await sender  # the server may close (after `done` or an error) while we still send


async def play(args: argparse.Namespace) -> int:
    audio = load_audio(args.file)
    settings = StreamSettings(args.chunk_seconds, args.left_context_seconds, args.lookahead_seconds)
    last = None
    url = realtime_url(args.url, settings, hotwords=split_hotwords(args.hotwords or ()), beam_size=args.beam_size)
    async for _, event in stream_audio(url, audio, args.speed):
        last = event
        if args.json:
            print(json.dumps(event), flush=True)
        elif event["type"] == "final":
            print(event["text"], end=" ", flush=True)  # committed words as they come; partials only with --json
        elif event["type"] == "done":
            print()
        if event["type"] == "error":
            print(f"parakeet: error: {event['message']}", file=sys.stderr)
    if last is None or last["type"] not in ("done", "error"):
        print("parakeet: error: the connection closed before the transcript was done", file=sys.stderr)
    return 0 if last and last["type"] == "done" else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = StreamSettings()
    parser.add_argument("file", metavar="FILE", help="audio file (wav, flac, ogg, mp3, ...), sent as 16 kHz PCM")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the server's realtime endpoint (default {DEFAULT_URL})")
    parser.add_argument("--speed", type=float, default=1.0, help="send this many times faster than real time")
    parser.add_argument("--chunk-seconds", type=float, default=defaults.chunk_seconds)
    parser.add_argument("--left-context-seconds", type=float, default=defaults.left_context_seconds)
    parser.add_argument("--lookahead-seconds", type=float, default=defaults.lookahead_seconds)
    parser.add_argument("--json", action="store_true", help="print every event (partials too) as a JSON line")
    parser.add_argument("--hotwords", action="append", metavar="LIST", help="phrases to recognise, as `transcribe`'s")
    parser.add_argument("--beam-size", type=beam_size, default=None, help="beam search width (server default)")


def execute(args: argparse.Namespace) -> int:
    if not args.speed > 0:
        raise ValueError(f"--speed must be positive, got {args.speed}")
    return asyncio.run(play(args))
