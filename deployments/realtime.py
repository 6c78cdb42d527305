"""The ingress's streaming protocols: the WebSocket session of /v1/realtime, and server-sent events for uploads.

Both send each window's features to the encoder through `encode` (the Encoder deployment's handle), so the
windows of every live stream and upload share the encoder's fixed-shape batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect

from model.audio import SAMPLE_RATE, AudioError, PCMStream
from model.stages import NOTHING_ENCODED, FeaturizedAudio
from pipeline.options import split_hotwords
from pipeline.streaming import Committer, Event, Stream, StreamError, StreamSettings

logger = logging.getLogger("ray.serve")

Encode = Callable[[np.ndarray], Awaitable[np.ndarray]]
UploadEncode = Callable[[np.ndarray, int], Awaitable[np.ndarray]]  # a window, and the windows before it
CLIENT_ERROR = 1008  # WebSocket close code "policy violation": bad parameters, frames or pace
SERVER_ERROR = 1011  # WebSocket close code "internal error"
END_MESSAGE = '{"type": "end"}'
DECODING_PARAMETERS = ("hotwords", "beam_size")  # hotwords: comma-separated, each optionally PHRASE:WEIGHT


def parse_query(params: Mapping[str, str]) -> tuple[int, StreamSettings, list[str], int | None]:
    """/v1/realtime's query parameters -> (sample rate, settings, hotword phrases, beam size or None); StreamError
    names a bad or unknown one."""
    defaults = {"sample_rate": SAMPLE_RATE, **dataclasses.asdict(StreamSettings())}
    unknown = sorted(set(params) - set(defaults) - set(DECODING_PARAMETERS))
    if unknown:
        known = ", ".join([*defaults, *DECODING_PARAMETERS])
        raise StreamError(f"unknown query parameter(s) {', '.join(unknown)}; known: {known}")
    beam_size = params.get("beam_size")
    if beam_size is not None and not beam_size.isdigit():
        raise StreamError(f"beam_size must be an integer, got {beam_size!r}")
    values = {}
    for name, default in defaults.items():
        kind = type(default)
        try:
            values[name] = kind(params.get(name, default))
        except ValueError:
            raise StreamError(
                f"{name} must be {'an integer' if kind is int else 'a number'}, got {params[name]!r}"
            ) from None
    hotwords = split_hotwords([params.get("hotwords")])
    beam = int(beam_size) if beam_size is not None else None
    return values.pop("sample_rate"), StreamSettings(**values), hotwords, beam


def check_end(text: str) -> None:
    """A text frame must be the end message; anything else is a protocol error."""
    try:
        message = json.loads(text)
    except ValueError:
        message = None
    if not isinstance(message, dict) or message.get("type") != "end":
        raise StreamError(f"text frames must be {END_MESSAGE}, got {text[:80]!r}; send audio as binary frames")


async def receive_audio(
    websocket: WebSocket, stream: Stream, pcm: PCMStream, arrived: asyncio.Event, idle_timeout: float
) -> None:
    """Feed the client's PCM frames into `stream` until its end message."""
    while True:
        try:
            message = await asyncio.wait_for(websocket.receive(), idle_timeout)
        except asyncio.TimeoutError:
            raise StreamError(
                f"no frame for {idle_timeout:g} s: send audio as it is recorded and {END_MESSAGE} when done"
            ) from None
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        if message.get("bytes") is not None:
            stream.feed(pcm(message["bytes"]))
        else:
            check_end(message.get("text") or "")
            stream.feed(pcm(b"", last=True))
            stream.end()
        arrived.set()
        if stream.ended:
            return


async def transcribe_audio(websocket: WebSocket, stream: Stream, encode: Encode, arrived: asyncio.Event) -> None:
    """Encode each window as soon as its audio is in, and send the events it gives; returns after `done`."""
    while not stream.finished:
        await arrived.wait()
        arrived.clear()
        while (window := stream.next_window()) is not None:
            features = await asyncio.to_thread(stream.featurize, window)  # log-mel off the event loop
            encoded = NOTHING_ENCODED if features is None else await encode(features)
            for event in stream.accept(window, encoded):
                await websocket.send_json(event)


async def close_with_error(websocket: WebSocket, message: str, code: int) -> None:
    await websocket.send_json({"type": "error", "message": message})
    await websocket.close(code, reason=close_reason(message))


def close_reason(message: str) -> str:
    """As much of `message` as a close frame holds (123 bytes of UTF-8)."""
    return message.encode()[:123].decode(errors="ignore")


async def run_session(
    websocket: WebSocket, stream: Stream, pcm: PCMStream, encode: Encode, idle_timeout: float
) -> None:
    """One accepted WebSocket session, from the first frame to the close, however it ends."""
    arrived = asyncio.Event()
    tasks = [
        asyncio.create_task(receive_audio(websocket, stream, pcm, arrived, idle_timeout)),
        asyncio.create_task(transcribe_audio(websocket, stream, encode, arrived)),
    ]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:  # the other half stops too, however this one ended (the client left: we are cancelled)
            task.cancel()
    failure = next((task.exception() for task in done if task.exception()), None)
    if isinstance(failure, WebSocketDisconnect):
        return  # the client left: nothing to tell it
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):  # it may leave while we tell it
        if failure is None:
            await websocket.close()
        elif isinstance(failure, (StreamError, AudioError)):
            await close_with_error(websocket, str(failure), CLIENT_ERROR)
        else:
            logger.error("realtime stream failed", exc_info=failure)
            await close_with_error(
                websocket, f"transcription failed: {type(failure).__name__}: {failure}", SERVER_ERROR
            )


def sse(event: Event) -> str:
    return f"data: {json.dumps(event)}\n\n"


async def upload_events(
    featurized: FeaturizedAudio, committer: Committer, encode: UploadEncode, in_flight: int, openai: bool = True
) -> AsyncIterator[str]:
    """Server-sent events for an upload's windows in order, as each is encoded: OpenAI's (`openai`), a
    `transcript.text.delta` of each window's text then `transcript.text.done`; or ours, a `final` of each window's
    words then `done`.

    At most `in_flight` windows are at the encoder at once, each ranked by the windows before it as a request's
    chunks are (deployments.batching.chunk_rank), so a long file neither floods it nor waits for all of its windows
    before the first text."""
    windows = iter(enumerate(zip(featurized.windows, featurized.features)))
    queue: deque = deque()

    def submit(count: int) -> None:
        for before, (window, features) in itertools.islice(windows, count):
            queue.append((window, asyncio.ensure_future(encode(features, before))))

    submit(in_flight)
    sent_text = False
    try:
        while queue:
            window, encoded = queue.popleft()
            final, _ = committer.commit(window, await encoded)
            submit(1)
            if final and openai:  # the deltas, joined, are the done event's text
                yield sse({"type": "transcript.text.delta", "delta": " " * sent_text + final["text"]})
                sent_text = True
            elif final:
                yield sse(final)
        done = committer.done()
        yield sse({"type": "transcript.text.done", "text": done["text"]} if openai else done)
    except Exception as err:
        logger.exception("streamed transcription failed")
        message = f"transcription failed: {type(err).__name__}: {err}"
        # OpenAI's clients raise an APIError for an event that carries an `error` object.
        error = {"message": message, "type": "server_error", "param": None, "code": "transcription_failed"}
        yield sse({"type": "error", "error": error} if openai else {"type": "error", "message": message})
    finally:
        for _, pending in queue:
            pending.cancel()
