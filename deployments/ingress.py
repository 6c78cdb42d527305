"""The ingress: OpenAI-compatible HTTP routes and the Python `DeploymentHandle` API, composing the stages."""

# No `from __future__ import annotations`: FastAPI reads the route signatures' types at run time.
import asyncio
import functools
import time
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, File, Form, Request, UploadFile, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle
from ray.serve.metrics import Counter, Gauge, Histogram
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments import realtime
from deployments.auth import ApiKeys, collect_keys, is_key_protocol
from deployments.batching import Batcher, WindowChunk, chunk_rank, chunk_windows, encode_in_chunks
from deployments.body_timeout import BodyTimeout
from deployments.config import DECODER_BATCHING, AppConfig, Batching
from model.audio import SAMPLE_RATE, AudioError, AudioTooLongError, PCMStream, UnsupportedFormatError
from model.biasing import HotwordError, prompt_hotwords
from model.decoding import GREEDY, DecodingOptions, Transcript
from model.stages import Decoder, FeaturizedAudio, Featurizer
from model.windows import Window
from pipeline.formats import render, usage, verbose_json
from pipeline.options import split_hotwords
from pipeline.streaming import Committer, Stream, StreamError

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("word", "segment")
STREAM_FORMATS = ("openai", "parakeet")  # stream=true's events: OpenAI's text deltas, or ours with timed words
ENCODER_CALLS_IN_FLIGHT = 8  # per ingress replica: enough to keep several Encoder replicas busy
ENCODER_CALL_WINDOWS = 64  # windows one Encoder call carries at most (of several requests)
REQUEST_CHUNKS_IN_FLIGHT = 2  # a long request's chunks of windows out at once: one queues while one runs
STAGE_ATTEMPTS = 3  # sends of a stage call whose replica dies under it, before the request gets a 503

app = FastAPI(title="parakeet-serve", summary="Parakeet speech-to-text, OpenAI-compatible")


class RequestError(Exception):
    """A request the service refuses, with the HTTP status and a message for the client."""

    def __init__(self, status: int, message: str, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def error_response(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """OpenAI's error body: {"error": {"message", "type", "param", "code"}}."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def unauthorized(reason: str) -> JSONResponse:
    return error_response(401, reason, "invalid_api_key", {"WWW-Authenticate": "Bearer"})


@app.exception_handler(RequestError)
async def _request_error(request: Request, err: RequestError) -> JSONResponse:
    return error_response(err.status, err.message, err.code)


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
    """Unknown routes (404) and methods (405) in OpenAI's error shape too."""
    code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
    return error_response(err.status_code, f"{request.method} {request.url.path}: {err.detail}", code)


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in err.errors())
    return error_response(400, f"invalid request: {problems}", "invalid_request")


def _refusal(request: Request) -> JSONResponse | None:
    """The answer to a request without a valid API key, or with an oversized body (by its Content-Length); None
    for one to admit."""
    keys = getattr(request.app.state, "api_keys", None)
    reason = keys and keys.check_http(request.url.path, request.headers.get("authorization"))
    if reason:
        return unauthorized(reason)
    limit = getattr(request.app.state, "max_upload_bytes", None)
    length = request.headers.get("content-length")
    if limit and length and length.isdigit() and int(length) > limit:
        return error_response(
            413, f"request body of {int(length)} bytes exceeds the limit of {limit} bytes", "too_large"
        )
    return None


class Admission:
    """Answers a request _refusal() refuses before its body is read. Pure ASGI: `@app.middleware("http")` would
    run every request through Starlette's BaseHTTPMiddleware, a task and a body stream of its own per request."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        refusal = _refusal(Request(scope)) if scope["type"] == "http" else None
        await (refusal or self.app)(scope, receive, send)


app.add_middleware(Admission)


def _stalled(seconds: float) -> JSONResponse:
    return error_response(408, f"the request body stopped arriving: nothing came for {seconds:g} s", "request_timeout")


# Outermost (added after Admission): a stalled upload is answered even while the app waits inside its body.
app.add_middleware(
    BodyTimeout, seconds_of=lambda scope: getattr(scope["app"].state, "upload_idle_timeout_s", None), answer=_stalled
)


def check_form(form: FormData, response_format: str, stream: bool, stream_format: str) -> list[str]:
    """Refuse (400) what OpenAI's API would, or what contradicts itself; returns the timestamp granularities.

    `timestamp_granularities` is taken with or without the `[]` that OpenAI's clients append."""
    if response_format not in RESPONSE_FORMATS:
        raise RequestError(
            400, f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, got {response_format!r}"
        )
    if len(form.getlist("file")) > 1:
        raise RequestError(400, f"send one audio file per request, got {len(form.getlist('file'))} `file` fields")
    given = form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities")
    unknown = sorted(set(given) - set(GRANULARITIES))
    if unknown:
        raise RequestError(400, f"timestamp_granularities[] must be word and/or segment, got {', '.join(unknown)}")
    if given and response_format != "verbose_json":
        raise RequestError(400, f"timestamp_granularities[] needs response_format=verbose_json, got {response_format}")
    if stream_format not in STREAM_FORMATS:
        raise RequestError(400, f"stream_format must be one of {', '.join(STREAM_FORMATS)}, got {stream_format!r}")
    if stream and response_format not in ("json", "text"):
        raise RequestError(
            400, f"stream=true sends server-sent events: response_format must be json or text, got {response_format}"
        )
    if "stream_format" in form and not stream:
        raise RequestError(400, "stream_format needs stream=true")
    return [str(granularity) for granularity in given] or ["segment"]


class StageUnavailableError(RuntimeError):
    """Every attempt at a stage's call died with the replica that ran it."""


async def call_stage(stage: DeploymentHandle, *args: Any) -> Any:
    """`await stage.remote(*args)`, sent again when its replica dies meanwhile (killed, out of memory, node lost).

    The stages are pure functions of their input, so a repeat is safe; Serve drops a dead replica from routing at
    once, so a repeat goes to a live replica, or waits for the one Serve starts in its place."""
    for _ in range(STAGE_ATTEMPTS):
        try:
            return await stage.remote(*args)
        except RayActorError as err:
            lost = err
    raise StageUnavailableError(
        f"{stage.deployment_name} lost its replica {STAGE_ATTEMPTS} times in a row "
        f"({type(lost).__name__}); retry the request"
    ) from lost


# Half a CPU a replica: on a 2-core machine the default two fit beside a CPU encoder.
@serve.deployment(name="Transcriber", max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.5})
@serve.ingress(app)
class Transcriber:
    """The HTTP, WebSocket and handle API, and the CPU stages: each request's audio is featurized here, its windows
    sent to the Encoder deployment in one call (a long request's in chunks; they share batches with other
    requests'), and decoded here.
    One hop per request (per window for streams): the CPU work scales with this deployment's replicas, on CPU
    nodes, and the Encoder's replicas spend their CPU on nothing but the model."""

    def __init__(self, encoder: DeploymentHandle, config: AppConfig) -> None:
        self.encoder = encoder
        self.config = config
        app.state.max_upload_bytes = config.max_upload_bytes
        app.state.upload_idle_timeout_s = config.upload_idle_timeout_s
        self.api_keys = app.state.api_keys = ApiKeys(collect_keys(config.api_keys, config.api_key_file))
        self.audio_seconds = Counter("parakeet_audio_seconds_total", description="Seconds of audio transcribed.")
        self.rtfx = Histogram(
            "parakeet_request_rtfx",
            boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
            description="Audio seconds per wall-clock second of a request, end to end.",
        )
        torch.set_num_threads(1)  # many small requests, each in a thread of its own off the event loop
        self.featurizer = Featurizer.from_pretrained(config.model, config.buckets.max_frames, config.context_seconds)
        self.decoder = Decoder.from_pretrained(config.model)
        self.decoder.check(config.decoding())  # the app's own hotwords and LM: a bad one fails the replica's start
        # The windows of the requests that queued while ENCODER_CALLS_IN_FLIGHT calls were out, in one Encoder call.
        self.encoder_calls = Batcher(
            self._send_to_encoder,
            ENCODER_CALL_WINDOWS,
            concurrency=ENCODER_CALLS_IN_FLIGHT,
            size=chunk_windows,
            rank=chunk_rank,
        )
        self.decode_batches = Batcher(self._decode_batch, max_size=1)  # its sizes: reconfigure's
        self.reconfigure(asdict(DECODER_BATCHING))
        self.live_streams = 0
        self.live_streams_gauge = Gauge("parakeet_live_streams", description="Open /v1/realtime sessions.")

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Decoding's batching (deployments.config.Batching) from the deployment's `user_config`."""
        batching = Batching.from_dict(user_config)
        self.decode_batches.max_size = batching.max_batch_size or DECODER_BATCHING.max_batch_size
        self.decode_batches.wait_s = batching.batch_wait_timeout_s

    def decoding(self, hotwords: list[str], beam_size: int | None = None, prompt: str | None = None) -> DecodingOptions:
        """A request's decoding options: the deployment's and its own hotwords, its prompt's uncommon words; raises
        RequestError (400) naming a bad hotword or beam size."""
        phrases = [*hotwords, *prompt_hotwords(prompt or "", self.decoder.tokenizer)]
        try:
            options = self.config.decoding(phrases, beam_size)
            self.decoder.check(options)
        except HotwordError as err:
            raise RequestError(400, str(err), "invalid_hotwords") from None
        except ValueError as err:
            raise RequestError(400, str(err)) from None
        return options

    async def encode(self, windows: list[np.ndarray], scored: bool = False, before: int = 0) -> list[np.ndarray]:
        """One request's feature windows (`before` of its windows went ahead of them) -> their encoder outputs
        (frame scores when `scored`: model.beam), in ranked chunks of an Encoder batch
        (deployments.batching.encode_in_chunks), so a long request's windows take turns with the requests after it."""
        return await encode_in_chunks(
            self.encoder_calls, windows, scored, self.config.buckets.max_batch_size, REQUEST_CHUNKS_IN_FLIGHT, before
        )

    async def _send_to_encoder(self, chunks: list[WindowChunk]) -> list[list[np.ndarray] | Exception]:
        return await call_stage(
            self.encoder.encode,
            [chunk.windows for chunk in chunks],
            [chunk.scored for chunk in chunks],
            [chunk.before for chunk in chunks],
        )

    async def encode_window(self, features: np.ndarray, before: int = 0, scored: bool = False) -> np.ndarray:
        """One window of a stream (a live one's rank first, `before` 0) or of a streamed upload."""
        return (await self.encode([features], scored, before))[0]

    async def featurize(self, audio: bytes | np.ndarray, sample_rate: int, name: str) -> FeaturizedAudio:
        """Raises AudioError, its message starting with `name`, for audio that cannot be decoded (AudioTooLongError
        past max_audio_seconds)."""
        return await asyncio.to_thread(self.featurizer, audio, sample_rate, name, self.config.max_audio_seconds)

    async def _decode_batch(
        self, utterances: list[tuple[list[Window], list[np.ndarray], float, DecodingOptions]]
    ) -> list[Transcript]:
        """Concurrent requests' encoder outputs decoded together (a transducer's greedy loop runs them as one batch)."""
        return await asyncio.to_thread(
            self.decoder.decode_many,
            [utterance[:3] for utterance in utterances],
            [utterance[3] for utterance in utterances],
        )

    async def transcribe(
        self,
        audio: bytes | np.ndarray,
        sample_rate: int = SAMPLE_RATE,
        name: str = "audio",
        options: DecodingOptions = GREEDY,
    ) -> Transcript:
        """Encoded audio bytes, or a float waveform at `sample_rate` -> Transcript, decoded with `options` (the
        handle API's; HTTP requests get theirs from `decoding`).

        Raises AudioError, its message starting with `name`, for audio that cannot be decoded, and
        StageUnavailableError when the Encoder's replicas keep dying under the request."""
        started = time.monotonic()
        self.decoder.check(options)
        featurized = await self.featurize(audio, sample_rate, name)
        encoded = await self.encode(featurized.features, options.searches)
        transcript = await self.decode_batches((featurized.windows, encoded, featurized.duration, options))
        if transcript.duration:
            self.audio_seconds.inc(transcript.duration)
            self.rtfx.observe(transcript.duration / (time.monotonic() - started))
        return transcript

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(
        self,
        request: Request,
        file: UploadFile = File(..., description="audio file: wav, flac, ogg or mp3"),
        model: str | None = Form(None, description="accepted for compatibility; the served model answers"),
        response_format: str = Form("json"),
        # Declared for the OpenAPI schema; check_form reads it from the form, with or without the [].
        timestamp_granularities: list[str] | None = Form(
            None, alias="timestamp_granularities[]", description="word and/or segment (default segment); verbose_json"
        ),
        language: str | None = Form(None, description="accepted and ignored"),
        prompt: str | None = Form(None, description="its words, less the most common ones, become hotwords"),
        hotwords: list[str] | None = Form(
            None, description="phrases to recognise, comma-separated (or repeated), each optionally PHRASE:WEIGHT"
        ),
        beam_size: int | None = Form(None, description="beam search width, 1-16 (default: 1, greedy; 4 with hotwords)"),
        temperature: float | None = Form(None, description="accepted and ignored: decoding is greedy or a beam"),
        stream: bool = Form(False, description="server-sent events: the text of each window as soon as it is decoded"),
        stream_format: str = Form(
            "openai", description="openai: transcript.text.delta/done events | parakeet: final events with words"
        ),
    ) -> Response:
        form = await request.form()
        granularities = check_form(form, response_format, stream, stream_format)
        options = self.decoding(split_hotwords(hotwords or ()), beam_size, prompt)
        data = await file.read()
        if len(data) > self.config.max_upload_bytes:
            raise RequestError(
                413, f"file of {len(data)} bytes exceeds the limit of {self.config.max_upload_bytes} bytes", "too_large"
            )
        try:
            if stream:
                return await self.stream_upload(data, file.filename or "file", stream_format, options)
            transcript = await self.transcribe(data, name=file.filename or "file", options=options)
        except UnsupportedFormatError as err:
            raise RequestError(415, str(err), "unsupported_format") from None
        except AudioTooLongError as err:
            raise RequestError(413, str(err), "audio_too_long") from None
        except AudioError as err:
            raise RequestError(400, str(err), "invalid_audio") from None
        except StageUnavailableError as err:
            raise RequestError(503, str(err), "service_unavailable") from None
        if response_format == "json":
            return JSONResponse({"text": transcript.text, "usage": usage(transcript)})
        if response_format == "verbose_json":
            return JSONResponse(verbose_json(transcript, granularities))
        media = "text/vtt" if response_format == "vtt" else "text/plain"
        return PlainTextResponse(render(transcript, response_format), media_type=media)

    @app.post("/v1/audio/translations")
    async def translations(self) -> Response:
        raise RequestError(
            404,
            "translation is not supported: Parakeet models transcribe English speech; "
            "use POST /v1/audio/transcriptions",
            "unsupported_route",
        )

    async def stream_upload(
        self, data: bytes, name: str, stream_format: str, options: DecodingOptions
    ) -> StreamingResponse:
        """Featurize the whole upload (so bad audio still gets its 4xx), then stream its windows' words."""
        featurized = await self.featurize(data, SAMPLE_RATE, name)
        events = realtime.upload_events(
            featurized,
            Committer(self.decoder, options),
            functools.partial(self.encode_window, scored=options.searches),
            in_flight=self.config.buckets.max_batch_size,
            openai=stream_format == "openai",
        )
        return StreamingResponse(events, media_type="text/event-stream")

    @app.websocket("/v1/realtime")
    async def realtime_session(self, websocket: WebSocket) -> None:
        """16-bit PCM frames in, partial/final/done (or error) JSON events out; see README "Streaming"."""
        offered = websocket.scope.get("subprotocols", [])
        refusal = self.api_keys.check_websocket(websocket.headers.get("authorization"), offered)
        if refusal:
            await websocket.send_denial_response(unauthorized(refusal))
            return
        # Browsers fail a handshake that offered subprotocols when none is chosen: choose one that holds no key.
        await websocket.accept(next((p for p in offered if not is_key_protocol(p)), None))
        try:
            sample_rate, settings, hotwords, beam_size = realtime.parse_query(websocket.query_params)
            options = self.decoding(hotwords, beam_size)
            pcm = PCMStream(sample_rate)
            stream = Stream(
                self.featurizer,
                self.decoder,
                settings,
                self.config.stream_max_backlog_s,
                self.config.max_stream_seconds,
                options,
            )
        except RequestError as err:
            await realtime.close_with_error(websocket, err.message, realtime.CLIENT_ERROR)
            return
        except (StreamError, AudioError) as err:
            await realtime.close_with_error(websocket, str(err), realtime.CLIENT_ERROR)
            return
        self.live_streams += 1
        self.live_streams_gauge.set(self.live_streams)
        try:
            encode = functools.partial(self.encode_window, scored=options.searches)
            await realtime.run_session(websocket, stream, pcm, encode, self.config.stream_idle_timeout_s)
        finally:
            self.live_streams -= 1
            self.live_streams_gauge.set(self.live_streams)

    @app.get("/healthz")
    async def healthz(self) -> dict:
        """`live_streams`: this replica's open /v1/realtime sessions."""
        return {"status": "ok", "live_streams": self.live_streams}

    @app.get("/v1/models")
    async def models(self) -> dict:
        return {
            "object": "list",
            "data": [{"id": self.config.model_name, "object": "model", "owned_by": "parakeet-serve"}],
        }
