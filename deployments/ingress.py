"""The ingress: OpenAI-compatible HTTP routes and the Python `DeploymentHandle` API, composing the stages."""

# No `from __future__ import annotations`: FastAPI reads the route signatures' types at run time.
import asyncio
import time
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

from deployments import realtime
from deployments.config import AppConfig
from model.audio import SAMPLE_RATE, AudioError, PCMStream, UnsupportedFormatError
from model.decoding import Transcript
from model.stages import Decoder, FeaturizedAudio, Featurizer
from pipeline.formats import render, verbose_json
from pipeline.streaming import Committer, Stream, StreamError

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("word", "segment")
STAGE_ATTEMPTS = 3  # sends of a stage call whose replica dies under it, before the request gets a 503

app = FastAPI(title="parakeet-serve", summary="Parakeet speech-to-text, OpenAI-compatible")


class RequestError(Exception):
    """A request the service refuses, with the HTTP status and a message for the client."""

    def __init__(self, status: int, message: str, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def error_response(status: int, message: str, code: str) -> JSONResponse:
    """OpenAI's error body: {"error": {"message", "type", "code"}}."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "code": code}}, status_code=status)


@app.exception_handler(RequestError)
async def _request_error(request: Request, err: RequestError) -> JSONResponse:
    return error_response(err.status, err.message, err.code)


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in err.errors())
    return error_response(400, f"invalid request: {problems}", "invalid_request")


@app.middleware("http")
async def _limit_upload_size(request: Request, call_next):
    """Refuse an oversized body from its Content-Length, before it is read."""
    limit = getattr(request.app.state, "max_upload_bytes", None)
    length = request.headers.get("content-length")
    if limit and length and length.isdigit() and int(length) > limit:
        return error_response(
            413, f"request body of {int(length)} bytes exceeds the limit of {limit} bytes", "too_large"
        )
    return await call_next(request)


def original_error(err: BaseException) -> BaseException:
    """The exception a replica raised, unwrapped from Ray's RayTaskError."""
    return getattr(err, "cause", None) or err


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


@serve.deployment(name="Transcriber", max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.1})
@serve.ingress(app)
class Transcriber:
    def __init__(
        self, featurizer: DeploymentHandle, encoder: DeploymentHandle, decoder: DeploymentHandle, config: AppConfig
    ) -> None:
        self.featurizer, self.encoder, self.decoder = featurizer, encoder, decoder
        self.config = config
        app.state.max_upload_bytes = config.max_upload_bytes
        self.audio_seconds = Counter("parakeet_audio_seconds_total", description="Seconds of audio transcribed.")
        self.rtfx = Histogram(
            "parakeet_request_rtfx",
            boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
            description="Audio seconds per wall-clock second of a request, end to end.",
        )
        # Streams cut their windows here (log-mel of a few seconds is cheap) and decode here: one hop per window.
        torch.set_num_threads(1)  # many small windows from many streams, in threads off the event loop
        self.stream_featurizer = Featurizer.from_pretrained(
            config.model, config.buckets.max_frames, config.context_seconds
        )
        self.stream_decoder = Decoder.from_pretrained(config.model)
        self.live_streams = 0
        self.live_streams_gauge = Gauge("parakeet_live_streams", description="Open /v1/realtime sessions.")

    async def encode(self, features: np.ndarray) -> np.ndarray:
        return await call_stage(self.encoder.encode, features)

    async def featurize(self, audio: bytes | np.ndarray, sample_rate: int, name: str) -> FeaturizedAudio:
        try:
            return await call_stage(self.featurizer, audio, sample_rate, name)
        except AudioError as err:
            raise original_error(err) from None

    async def transcribe(
        self, audio: bytes | np.ndarray, sample_rate: int = SAMPLE_RATE, name: str = "audio"
    ) -> Transcript:
        """Encoded audio bytes, or a float waveform at `sample_rate` -> Transcript.

        Raises AudioError, its message starting with `name`, for audio that cannot be decoded, and
        StageUnavailableError when a stage's replicas keep dying under the request."""
        started = time.monotonic()
        featurized = await self.featurize(audio, sample_rate, name)
        encoded = await asyncio.gather(*(self.encode(features) for features in featurized.features))
        transcript = await call_stage(self.decoder, featurized.windows, list(encoded), featurized.duration)
        if transcript.duration:
            self.audio_seconds.inc(transcript.duration)
            self.rtfx.observe(transcript.duration / (time.monotonic() - started))
        return transcript

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(
        self,
        file: UploadFile = File(..., description="audio file: wav, flac, ogg or mp3"),
        model: str | None = Form(None, description="accepted for compatibility; the served model answers"),
        response_format: str = Form("json"),
        timestamp_granularities: list[str] = Form(["segment"], alias="timestamp_granularities[]"),
        language: str | None = Form(None, description="accepted and ignored"),
        prompt: str | None = Form(None, description="accepted and ignored"),
        temperature: float | None = Form(None, description="accepted and ignored: decoding is greedy"),
        stream: bool = Form(False, description="server-sent events: each segment as soon as it is decoded"),
    ) -> Response:
        if response_format not in RESPONSE_FORMATS:
            raise RequestError(
                400, f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, got {response_format!r}"
            )
        unknown = sorted(set(timestamp_granularities) - set(GRANULARITIES))
        if unknown:
            raise RequestError(400, f"timestamp_granularities[] must be word and/or segment, got {', '.join(unknown)}")
        data = await file.read()
        if len(data) > self.config.max_upload_bytes:
            raise RequestError(
                413, f"file of {len(data)} bytes exceeds the limit of {self.config.max_upload_bytes} bytes", "too_large"
            )
        try:
            if stream:
                return await self.stream_upload(data, file.filename or "file")
            transcript = await self.transcribe(data, name=file.filename or "file")
        except UnsupportedFormatError as err:
            raise RequestError(415, str(err), "unsupported_format") from None
        except AudioError as err:
            raise RequestError(400, str(err), "invalid_audio") from None
        except StageUnavailableError as err:
            raise RequestError(503, str(err), "service_unavailable") from None
        if response_format == "json":
            return JSONResponse({"text": transcript.text})
        if response_format == "verbose_json":
            return JSONResponse(verbose_json(transcript, timestamp_granularities))
        media = "text/vtt" if response_format == "vtt" else "text/plain"
        return PlainTextResponse(render(transcript, response_format), media_type=media)

    async def stream_upload(self, data: bytes, name: str) -> StreamingResponse:
        """Featurize the whole upload (so bad audio still gets its 4xx), then stream its windows' words."""
        featurized = await self.featurize(data, SAMPLE_RATE, name)
        events = realtime.upload_events(
            featurized, Committer(self.stream_decoder), self.encode, in_flight=self.config.buckets.max_batch_size
        )
        return StreamingResponse(events, media_type="text/event-stream")

    @app.websocket("/v1/realtime")
    async def realtime_session(self, websocket: WebSocket) -> None:
        """16-bit PCM frames in, partial/final/done (or error) JSON events out; see README "Streaming"."""
        await websocket.accept()
        try:
            sample_rate, settings = realtime.parse_query(websocket.query_params)
            pcm = PCMStream(sample_rate)
            stream = Stream(self.stream_featurizer, self.stream_decoder, settings, self.config.stream_max_backlog_s)
        except (StreamError, AudioError) as err:
            await realtime.close_with_error(websocket, str(err), realtime.CLIENT_ERROR)
            return
        self.live_streams += 1
        self.live_streams_gauge.set(self.live_streams)
        try:
            await realtime.run_session(websocket, stream, pcm, self.encode, self.config.stream_idle_timeout_s)
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
