"""Who gets in (API keys on HTTP and the WebSocket, the loopback default) and what no input can do (decoded-audio
limits, a fuzz test of the audio path), in the library and through the Serve app."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import requests
import soundfile

from deployments.auth import ApiKeys, collect_keys, read_key_file
from model.audio import AudioError, AudioTooLongError, load_audio
from pipeline import batch
from tests.mutants import mutants
from tests.serving import running_app

serve = pytest.importorskip("ray.serve")  # as in test_serve: it also hides the warnings Ray's own models raise

PORT = 8128
URL = f"http://127.0.0.1:{PORT}"
KEYS = ("key-one-4f0c", "key-two-9b1e")
WRONG_KEY = "wrong-key-77aa"
APP_OPTIONS = {
    "device": "cpu",
    "batch_sizes": [1, 8],
    "frame_counts": [600, 1200],
    "encoder_threads": 1,
    "max_upload_mb": 2.0,
    "max_audio_seconds": 600.0,
    "max_stream_seconds": 20.0,
    "upload_idle_timeout_s": 3.0,
    "api_keys": [KEYS[0]],
}
HTTP_MUTANTS = 48
FUZZ_ANSWER_S = 60  # seconds within which each fuzzed upload must be answered


def silent_flac(seconds: int) -> bytes:
    """`seconds` of digital silence as FLAC: an hour is under 200 kB."""
    buffer = io.BytesIO()
    with soundfile.SoundFile(buffer, "w", 16000, 1, format="FLAC") as file:
        minute = np.zeros(16000 * 60, np.float32)
        for _ in range(seconds // 60):
            file.write(minute)
    return buffer.getvalue()


# --- keys ---


def test_keys_come_from_the_config_a_file_and_the_environment(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text("# one a line\nfile-key-1\n\n  file-key-2  \n")
    environ = {"PARAKEET_API_KEY": "env-key-1, env-key-2"}
    assert collect_keys(["config-key"], key_file, environ) == [
        "config-key",
        "file-key-1",
        "file-key-2",
        "env-key-1",
        "env-key-2",
    ]
    assert collect_keys((), None, {}) == []


def test_a_missing_or_empty_key_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot read the API key file .*/absent: No such file"):
        read_key_file(tmp_path / "absent")
    (tmp_path / "empty").write_text("# nothing yet\n")
    with pytest.raises(ValueError, match=r"the API key file .*/empty holds no key"):
        read_key_file(tmp_path / "empty")
    with pytest.raises(ValueError, match="printable, without spaces"):
        collect_keys(["two words"], None, {})


def test_keys_are_checked_on_every_path_but_the_health_check() -> None:
    keys = ApiKeys(KEYS)
    assert keys.check_http("/v1/models", f"Bearer {KEYS[1]}") is None
    assert keys.check_http("/v1/models", f"bearer {KEYS[0]}") is None  # the scheme is case-insensitive
    assert keys.check_http("/healthz", None) is None
    assert keys.check_http("/v1/models", None).startswith("no API key")
    assert keys.check_http("/docs", f"Bearer {WRONG_KEY}") == "invalid API key"
    assert keys.check_http("/v1/models", f"Basic {KEYS[0]}") == "the Authorization header must be `Bearer KEY`"
    assert keys.check_websocket(None, ["realtime", f"openai-insecure-api-key.{KEYS[1]}"]) is None
    assert keys.check_websocket(None, [f"openai-insecure-api-key.{WRONG_KEY}"]) == "invalid API key"
    assert keys.check_websocket(None, ["realtime"]).startswith("no API key")
    assert not ApiKeys([]) and ApiKeys([]).check_http("/v1/models", None) is None  # no keys: everyone is let in


# --- limits on decoded audio ---


def test_a_small_file_that_decodes_to_hours_is_refused_before_decoding() -> None:
    hour = silent_flac(3600)
    assert len(hour) < 250_000
    tracemalloc.start()
    try:
        with pytest.raises(AudioTooLongError, match=r"upload.flac: audio is 3600 s long, over the limit of 600 s"):
            load_audio(hour, name="upload.flac", max_seconds=600)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * len(hour) + 1_000_000  # the file and a little, not the 230 MB it decodes to
    assert len(load_audio(silent_flac(60), max_seconds=600)) == 60 * 16000  # under the limit it decodes as before


def test_decoding_block_by_block_gives_the_whole_files_samples() -> None:
    rng = np.random.default_rng(0)
    stereo = (0.1 * rng.standard_normal((3 * 2**20 // 2 + 123, 2))).astype(np.float32)  # over three decode blocks
    buffer = io.BytesIO()
    soundfile.write(buffer, stereo, 16000, format="WAV", subtype="FLOAT")
    expected = stereo.mean(axis=1, dtype=np.float64).astype(np.float32)
    np.testing.assert_array_equal(load_audio(buffer.getvalue()), expected)


def test_arrays_over_the_limit_and_absurd_headers_are_refused() -> None:
    with pytest.raises(AudioTooLongError, match=r"<array>: audio is 61 s long, over the limit of 60 s"):
        load_audio(np.zeros(61 * 16000, np.float32), max_seconds=60)
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(1600, np.float32), 16000, format="WAV")
    wav = bytearray(buffer.getvalue())
    wav[24:28] = (1).to_bytes(4, "little")  # a sample rate of 1 Hz: 1600 samples "last" 27 minutes
    with pytest.raises(AudioError, match=r"sample rate 1 Hz is outside 1000 to 768000 Hz"):
        load_audio(bytes(wav))
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(1600, np.float32), 16000, format="FLAC")
    flac = bytearray(buffer.getvalue())
    flac[21:26] = bytes([flac[21] & 0xF0, 0, 0, 0, 0])  # STREAMINFO's total samples 0: "unknown"
    with pytest.raises(AudioError, match="does not say how long it is"):
        load_audio(bytes(flac))


def test_a_batch_row_over_max_duration_gets_its_error_without_being_decoded(small_checkpoint) -> None:
    config = batch.BatchConfig(input="-", output="-", model=str(small_checkpoint.directory), max_duration=600.0)
    table = pa.table({"id": ["long", "short"], "audio": [silent_flac(3600), silent_flac(60)]})
    rows = batch.featurize_rows(table, config)
    assert rows["error"][0] == "row 'long': audio is 3600 s long, over the limit of 600 s"
    assert rows["error"][1] == batch.NO_ERROR and rows["duration"][1] == 60.0


# --- slow clients ---


def asgi_post(app, chunks: list[bytes], stall: bool) -> list[dict]:
    """POST `chunks` as a body to an ASGI app (then nothing more, ever, when `stall`) -> the messages it sent."""
    sent = []
    more = [True] * (len(chunks) - 1) + [stall]
    queue = [{"type": "http.request", "body": chunk, "more_body": flag} for chunk, flag in zip(chunks, more)]

    async def receive() -> dict:
        if queue:
            return queue.pop(0)
        await asyncio.sleep(3600)

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/upload", "headers": [], "query_string": b""}
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
    return sent


def test_a_stalled_body_is_answered_408_and_the_app_stops() -> None:
    from starlette.applications import Starlette
    from starlette.requests import ClientDisconnect
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    from deployments.body_timeout import BodyTimeout

    seen = []

    async def upload(request) -> JSONResponse:
        try:
            return JSONResponse({"bytes": len(await request.body())})
        except ClientDisconnect:
            seen.append("disconnect")
            raise

    inner = Starlette(routes=[Route("/upload", upload, methods=["POST"])])
    app = BodyTimeout(inner, lambda scope: 0.3, lambda seconds: PlainTextResponse(f"no body for {seconds} s", 408))
    sent = asgi_post(app, [b"abc", b"de"], stall=False)
    assert sent[0]["status"] == 200 and sent[1]["body"] == b'{"bytes":5}'
    sent = asgi_post(app, [b"abc"], stall=True)
    assert sent[0]["status"] == 408 and sent[1]["body"] == b"no body for 0.3 s"
    assert len(sent) == 2 and seen == ["disconnect"]  # the app saw the client go; its own answer was dropped


# --- fuzz ---


def test_fuzzed_audio_decodes_or_gets_an_audio_error() -> None:
    """Every mutant answers within seconds: a finite mono float32 waveform, or AudioError; nothing else escapes."""
    outcomes = {"decoded": 0, "refused": 0}
    for name, data in mutants(400, seed=1):
        started = time.monotonic()
        try:
            audio = load_audio(data, name=name, allow_empty=True, max_seconds=600)
        except AudioError as err:
            assert str(err).startswith(name), err
            outcomes["refused"] += 1
        else:
            assert audio.dtype == np.float32 and audio.ndim == 1 and np.isfinite(audio).all(), name
            outcomes["decoded"] += 1
        assert time.monotonic() - started < 10, f"{name} took {time.monotonic() - started:.1f} s"
    assert min(outcomes.values()) > 40, outcomes  # the mutants are neither all fatal nor all harmless


# --- the command line ---


def parakeet(*args: str) -> subprocess.CompletedProcess:
    environ = {name: value for name, value in os.environ.items() if name != "PARAKEET_API_KEY"}
    command = [sys.executable, "-m", "cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=environ)


def test_serve_refuses_a_public_host_without_keys(tmp_path: Path) -> None:
    refused = parakeet("serve", "--host", "0.0.0.0")
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "parakeet: error: --host 0.0.0.0 lets other machines in, and no API key is set: give --api-key-file FILE "
        "or $PARAKEET_API_KEY, or --insecure to serve without keys"
    )
    missing = parakeet("serve", "--host", "0.0.0.0", "--api-key-file", str(tmp_path / "keys"))
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        f"parakeet: error: cannot read the API key file {tmp_path / 'keys'}: No such file or directory"
    )


# --- through the app ---


@pytest.fixture(scope="module")
def app(monkeypatch_module):
    monkeypatch_module.setenv("PARAKEET_API_KEY", KEYS[1])  # the replicas' environment: the second key
    with running_app(APP_OPTIONS, PORT) as handle:
        yield handle


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def transcription(key: str | None, data: bytes = b"", name: str = "speech.flac", **fields: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.post(
        f"{URL}/v1/audio/transcriptions",
        files={"file": (name, data or silent_flac(60))},
        data=fields,
        headers=headers,
        timeout=FUZZ_ANSWER_S,
    )


def error_of(response: requests.Response) -> tuple[int, str]:
    body = response.json()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    return response.status_code, body["code"]


@pytest.mark.slow
def test_only_requests_with_a_key_get_in(app) -> None:
    assert error_of(transcription(None)) == (401, "invalid_api_key")
    assert error_of(transcription(WRONG_KEY)) == (401, "invalid_api_key")
    for key in KEYS:  # the config's key and $PARAKEET_API_KEY's
        assert transcription(key).json()["text"] == ""
    for path in ("/v1/models", "/docs", "/openapi.json"):
        assert requests.get(URL + path, timeout=10).status_code == 401, path
    assert requests.get(f"{URL}/healthz", timeout=10).json()["status"] == "ok"
    assert requests.get(f"{URL}/v1/models", headers={"Authorization": f"Bearer {KEYS[0]}"}, timeout=10).ok


@pytest.mark.slow
def test_openai_sdk_sends_its_key_as_the_service_expects(app) -> None:
    openai = pytest.importorskip("openai")

    def client(key: str):
        return openai.OpenAI(base_url=f"{URL}/v1", api_key=key, max_retries=0, timeout=60)

    with pytest.raises(openai.AuthenticationError, match="invalid API key"):
        client(WRONG_KEY).models.list()
    upload = ("speech.flac", silent_flac(60))
    assert client(KEYS[1]).audio.transcriptions.create(model="parakeet", file=upload).text == ""


def raw_answer(connection: socket.socket, marker: bytes) -> bytes:
    """What the server sends on `connection` until `marker` (its headers, then its body, may come apart)."""
    answer = b""
    while marker not in answer and (piece := connection.recv(65536)):
        answer += piece
    return answer


@pytest.mark.slow
def test_a_request_without_a_key_is_refused_before_its_body_is_sent(app) -> None:
    with socket.create_connection(("127.0.0.1", PORT), timeout=30) as connection:
        connection.sendall(
            b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 1000000\r\n\r\n"
        )
        answer = raw_answer(connection, b"invalid_api_key")
    assert answer.startswith(b"HTTP/1.1 401") and b'"invalid_api_key"' in answer


@pytest.mark.slow
def test_an_upload_that_stops_arriving_gets_408(app) -> None:
    with socket.create_connection(("127.0.0.1", PORT), timeout=30) as connection:
        connection.sendall(
            b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Authorization: Bearer {KEYS[0]}\r\n".encode()
            + b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 1000000\r\n\r\n--x\r\n"
        )
        started = time.monotonic()
        answer = raw_answer(connection, b"request_timeout")
    assert answer.startswith(b"HTTP/1.1 408") and b"nothing came for 3 s" in answer
    assert time.monotonic() - started < 15
    assert requests.get(f"{URL}/healthz", timeout=10).json()["status"] == "ok"


@pytest.mark.slow
def test_the_websocket_takes_its_key_as_a_header_or_subprotocol(app) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    realtime = f"ws://127.0.0.1:{PORT}/v1/realtime"
    for options in (
        {"additional_headers": {"Authorization": f"Bearer {KEYS[0]}"}},
        {"subprotocols": ["realtime", f"openai-insecure-api-key.{KEYS[1]}"]},
    ):
        with connect(realtime, **options) as websocket:
            assert websocket.subprotocol == options.get("subprotocols", [None])[0]  # never the one holding the key
            websocket.send('{"type": "end"}')
            assert websocket.recv(timeout=30) == '{"type":"done","text":""}'
    for options in ({}, {"subprotocols": ["realtime", f"openai-insecure-api-key.{WRONG_KEY}"]}):
        with pytest.raises(InvalidStatus) as refused:
            connect(realtime, **options)
        assert refused.value.response.status_code == 401 and b'"invalid_api_key"' in refused.value.response.body


@pytest.mark.slow
def test_audio_over_the_limits_is_refused(app) -> None:
    hour = silent_flac(3600)
    for fields in ({}, {"stream": "true"}):
        refused = transcription(KEYS[0], hour, "hour.flac", **fields)
        assert error_of(refused) == (413, "audio_too_long")
        assert refused.json()["error"]["message"] == "hour.flac: audio is 3600 s long, over the limit of 600 s"
    with pytest.raises(AudioTooLongError):  # the handle API too
        app.transcribe.remote(np.zeros(601 * 16000, np.float32), 16000).result(timeout_s=60)

    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with connect(
        f"ws://127.0.0.1:{PORT}/v1/realtime", additional_headers={"Authorization": f"Bearer {KEYS[0]}"}
    ) as websocket:
        with contextlib.suppress(ConnectionClosed):  # the server may close before the last frames are sent
            for _ in range(25):  # a second of silence a frame: past the app's 20 s
                websocket.send(bytes(2 * 16000))
        events = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                events.append(json.loads(websocket.recv(timeout=30)))
    assert closed.value.rcvd.code == 1008
    assert events[-1]["type"] == "error" and "ran past its limit of 20 s of audio" in events[-1]["message"]


@pytest.mark.slow
def test_fuzzed_uploads_get_answers_and_the_server_stays_healthy(app) -> None:
    import ray

    def replicas() -> set[str]:
        """The replicas' actor names: a replica that dies is replaced by one of another name."""
        actors = ray.util.list_named_actors(all_namespaces=True)
        return {actor["name"] for actor in actors if actor["name"].startswith("SERVE_REPLICA")}

    before = replicas()
    statuses: dict[int, int] = {}
    for name, data in mutants(HTTP_MUTANTS, seed=2):
        answer = transcription(KEYS[0], data, name)  # raises if unanswered within FUZZ_ANSWER_S
        assert answer.status_code == 200 or error_of(answer)[0] in (400, 413, 415), (name, answer.text)
        statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
    assert statuses.get(200, 0) > 0 and statuses.get(400, 0) > 0, statuses
    assert requests.get(f"{URL}/healthz", timeout=10).json()["status"] == "ok"
    assert replicas() == before  # no replica died and was replaced
    assert transcription(KEYS[0]).json()["text"] == ""


@pytest.mark.slow
def test_keys_never_reach_the_logs(app) -> None:
    import ray

    transcription(KEYS[0])
    transcription(WRONG_KEY)
    time.sleep(2)  # the replicas' log lines reach their files
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    texts = [path.read_bytes() for path in logs.rglob("*") if path.is_file()]
    assert texts and b"POST /v1/audio/transcriptions" in b"".join(texts)  # the access log is there to search
    for secret in (*KEYS, WRONG_KEY):
        assert not any(secret.encode() in text for text in texts), secret


@pytest.mark.slow
def test_serve_refuses_a_port_in_use(app) -> None:
    refused = parakeet("serve", "--port", str(PORT))
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        f"parakeet: error: port {PORT} on 127.0.0.1 is in use (another `parakeet serve`?); stop it or choose another "
        "--port"
    )
