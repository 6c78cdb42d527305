"""Streaming through the Serve app: the /v1/realtime WebSocket, server-sent events for uploads, errors, clean-up."""

from __future__ import annotations

import asyncio
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import soundfile
import soxr

from cli.stream import pcm16, realtime_url, stream_audio
from deployments.realtime import close_reason
from pipeline.streaming import StreamSettings
from recipe.metrics import word_error_rate
from tests.serving import encoder_batch_sizes, running_app

serve = pytest.importorskip("ray.serve")
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

PORT = 8125
URL = f"http://127.0.0.1:{PORT}"
REALTIME = f"ws://127.0.0.1:{PORT}/v1/realtime"
# Windows of up to 12 s (the default 10 s streaming window fits), long audio windowed with 2 s of context.
APP_OPTIONS = {
    "device": "cpu",
    "batch_sizes": [1, 8],
    "frame_counts": [600, 1200],
    "context_seconds": 2.0,
    "encoder_threads": 1,
    "stream_max_backlog_s": 20.0,
    "stream_idle_timeout_s": 5.0,
    "ingress_replicas": 1,  # /healthz's live_streams counts one replica's streams: here, all of them
}
# Streaming windows equal to the app's long-audio windows: 8 s committed, 2 s of context on each side.
OFFLINE_WINDOWS = StreamSettings(chunk_seconds=8.0, left_context_seconds=2.0, lookahead_seconds=2.0)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app():
    with running_app(APP_OPTIONS, PORT) as handle:
        yield handle


def streamed(audio: np.ndarray, settings: StreamSettings | None = None, speed: float = 8.0) -> list[tuple[float, dict]]:
    """(seconds since the first frame was due, event) of one stream of a 16 kHz waveform."""

    async def collect() -> list[tuple[float, dict]]:
        return [item async for item in stream_audio(realtime_url(REALTIME, settings), audio, speed)]

    return asyncio.run(collect())


def words_of(events: list[dict]) -> list[dict]:
    return [word for event in events if event["type"] == "final" for word in event["words"]]


def check_consistent(events: list[dict]) -> None:
    """Ends with the one `done`, no error; the final events, never revised, add up to it; word times increase."""
    kinds = [event["type"] for event in events]
    assert kinds[-1] == "done" and kinds.count("done") == 1 and "error" not in kinds, kinds
    finals = [event for event in events if event["type"] == "final"]
    assert " ".join(event["text"] for event in finals) == events[-1]["text"]
    starts = [word["start"] for word in words_of(events)]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)


def offline(audio: np.ndarray, **fields: str) -> dict:
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, 16000, format="FLAC")
    answer = requests.post(
        f"{URL}/v1/audio/transcriptions",
        files={"file": ("long.flac", buffer.getvalue())},
        data={"response_format": "verbose_json", "timestamp_granularities[]": "word", **fields},
        timeout=300,
    )
    return answer.json()


def live_streams() -> int:
    return requests.get(f"{URL}/healthz", timeout=10).json()["live_streams"]


def wait_for_live_streams(count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while live_streams() != count:
        assert time.monotonic() < deadline, f"live_streams stayed {live_streams()}, expected {count}"
        time.sleep(0.2)


def session(url: str, *frames: bytes | str) -> tuple[list[dict], int, str]:
    """Send `frames` on a raw WebSocket -> the events received until the server closed, its close code and reason."""
    events = []
    with connect(url) as websocket:
        try:
            for frame in frames:
                websocket.send(frame)
            while True:
                events.append(json.loads(websocket.recv(timeout=60)))
        except ConnectionClosed as closed:
            return events, closed.rcvd.code, closed.rcvd.reason
    raise AssertionError("unreachable")


def test_a_long_recording_streams_to_the_offline_transcript(app, long_recording: np.ndarray) -> None:
    """With windows equal to the offline path's, streaming (in frames of 0.1 s, at 4x real time) gives the offline
    transcript word for word: no word lost or doubled at any of the seams."""
    expected = offline(long_recording)
    events = [event for _, event in streamed(long_recording, OFFLINE_WINDOWS, speed=4.0)]
    check_consistent(events)
    assert word_error_rate([expected["text"]], [events[-1]["text"]]) <= 0.01
    assert events[-1]["text"] == expected["text"]
    assert words_of(events) == expected["words"]


def test_partials_arrive_while_audio_is_still_being_sent(app, long_recording: np.ndarray) -> None:
    audio, speed = long_recording[: 16000 * 24], 2.0
    timed = streamed(audio, speed=speed)
    events = [event for _, event in timed]
    check_consistent(events)
    first_partial = next(at for at, event in timed if event["type"] == "partial")
    assert first_partial < 24 / speed  # before the last frame is even due
    assert sum(event["type"] == "partial" for event in events) >= 10
    assert events[-1]["text"] != ""


def test_eight_concurrent_streams_complete_and_share_batches(app, long_recording: np.ndarray) -> None:
    clips = [long_recording[16000 * 7 * i : 16000 * (7 * i + 10)] for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda clip: [event for _, event in streamed(clip, speed=2.0)], clips))
    for events in results:
        check_consistent(events)
        assert events[-1]["text"] != ""
    batches, shared = encoder_batch_sizes()
    assert shared > 0, f"none of {batches} encoder batches held more than one window"
    wait_for_live_streams(0)


def test_other_sample_rates_are_resampled(app, long_recording: np.ndarray) -> None:
    audio = long_recording[: 16000 * 6]
    at_16k = [event for _, event in streamed(audio, OFFLINE_WINDOWS)][-1]["text"]
    at_44k = soxr.resample(audio, 16000, 44100, quality="HQ")
    events, code, _ = session(
        realtime_url(REALTIME, OFFLINE_WINDOWS, sample_rate=44100),
        pcm16(at_44k[: len(at_44k) // 2]),
        pcm16(at_44k[len(at_44k) // 2 :]),
        '{"type": "end"}',
    )
    assert code == 1000 and events[-1]["type"] == "done"
    assert word_error_rate([at_16k], [events[-1]["text"]]) <= 0.2


def test_a_dropped_connection_frees_its_stream(app, long_recording: np.ndarray) -> None:
    wait_for_live_streams(0)
    with connect(REALTIME) as websocket:
        websocket.send(pcm16(long_recording[: 16000 * 3]))
        wait_for_live_streams(1)
        websocket.socket.close()  # gone without a close frame, as when a network drops
        wait_for_live_streams(0, timeout=4.0)  # sooner than the 5 s idle timeout: the disconnect itself freed it


@pytest.mark.parametrize(
    "query, message",
    [
        ("sample_rate=fast", "sample_rate must be an integer, got 'fast'"),
        ("sample_rate=100", "sample_rate must be 8000 to 192000 Hz, got 100"),
        ("chunk_seconds=0", "chunk_seconds must be at least one encoder frame"),
        ("left_context_seconds=11", "at most 12 s"),
        ("language=en", "unknown query parameter(s) language"),
    ],
)
def test_bad_parameters_get_an_error_event(app, query: str, message: str) -> None:
    events, code, reason = session(f"{REALTIME}?{query}")
    assert len(events) == 1 and events[0]["type"] == "error" and message in events[0]["message"]
    assert code == 1008 and reason == close_reason(events[0]["message"])


@pytest.mark.parametrize(
    "frames, message",
    [
        ((b"\x00\x01\x02",), "a PCM frame must hold whole 16-bit samples (an even number of bytes), got 3 bytes"),
        (("hello",), """text frames must be {"type": "end"}, got 'hello'"""),
        (('{"type": "stop"}',), "text frames must be"),
        (
            (bytes(2 * 16000 * 30),),
            "audio is arriving faster than it can be transcribed",
        ),  # 30 s at once; the limit is 20
    ],
)
def test_bad_frames_and_too_fast_clients_get_an_error_event(app, frames: tuple, message: str) -> None:
    events, code, _ = session(REALTIME, *frames)
    assert events[-1]["type"] == "error" and message in events[-1]["message"], events
    assert code == 1008
    wait_for_live_streams(0)


def test_a_stalled_client_gets_an_error_event(app) -> None:
    events, code, _ = session(REALTIME, pcm16(np.zeros(1600, np.float32)))
    assert events[-1] == {
        "type": "error",
        "message": 'no frame for 5 s: send audio as it is recorded and {"type": "end"} when done',
    }
    assert code == 1008
    wait_for_live_streams(0)


def test_uploads_stream_server_sent_events(app, long_recording: np.ndarray) -> None:
    expected = offline(long_recording)
    buffer = io.BytesIO()
    soundfile.write(buffer, long_recording, 16000, format="FLAC")
    with requests.post(
        f"{URL}/v1/audio/transcriptions",
        files={"file": ("long.flac", buffer.getvalue())},
        data={"stream": "true", "stream_format": "parakeet"},
        stream=True,
        timeout=300,
    ) as answer:
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in answer.iter_lines(decode_unicode=True) if line]
    events = [json.loads(line.removeprefix("data: ")) for line in lines]
    assert all(line.startswith("data: ") for line in lines)
    check_consistent(events)
    assert sum(event["type"] == "final" for event in events) > 1
    assert events[-1]["text"] == expected["text"] and words_of(events) == expected["words"]

    answer = requests.post(
        f"{URL}/v1/audio/transcriptions",
        files={"file": ("notes.txt", b"not audio")},
        data={"stream": "true"},
        timeout=60,
    )
    assert answer.status_code == 400 and answer.json()["error"]["message"].startswith("notes.txt: cannot decode audio")


def test_the_stream_command_prints_the_events(app, long_recording: np.ndarray, tmp_path, capsys) -> None:
    from cli.main import main

    path = tmp_path / "six_seconds.flac"
    soundfile.write(path, long_recording[: 16000 * 6], 16000)
    assert main(["stream", str(path), "--url", REALTIME, "--speed", "4", "--json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    check_consistent(events)
    assert main(["stream", str(path), "--url", REALTIME, "--speed", "4"]) == 0
    assert capsys.readouterr().out.strip() == events[-1]["text"]
    assert main(["stream", str(path), "--url", REALTIME, "--chunk-seconds", "0"]) == 1
    assert "chunk_seconds must be at least one encoder frame" in capsys.readouterr().err


def test_hotwords_bias_a_stream_as_they_bias_the_upload(app, unseen_speech, long_recording: np.ndarray) -> None:
    """`?hotwords=` on a stream with the offline windows gives the upload's biased transcript word for word; the
    hotwords (the words the plain transcript missed) bring it closer to what was said."""
    said = " ".join(unseen_speech[0][:24])
    plain = offline(long_recording)
    missed = [word for word in dict.fromkeys(said.split()) if word not in plain["text"].split()]
    biased = offline(long_recording, hotwords=",".join(missed))
    assert word_error_rate([said], [biased["text"]]) < word_error_rate([said], [plain["text"]])
    url = realtime_url(REALTIME, OFFLINE_WINDOWS, hotwords=missed)

    async def collect() -> list[dict]:
        return [event async for _, event in stream_audio(url, long_recording, 8.0)]

    events = asyncio.run(collect())
    check_consistent(events)
    assert words_of(events) == biased["words"]
    events, code, _ = session(f"{REALTIME}?hotwords=z%C3%BCrich")
    assert events[0]["message"] == "hotword 'zürich': the model cannot spell 'ü'" and code == 1008
