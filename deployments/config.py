"""The Serve application's options: the `args:` of serve_config.yaml, or `parakeet serve` flags; and each stage's
batching, its `user_config`."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from model import checkpoint
from model.biasing import Hotword
from model.decoding import DecodingOptions, decoding_options
from model.stages import Buckets, default_dtype
from model.windows import DEFAULT_CONTEXT_SECONDS
from pipeline.resources import DEVICES, check_threads

DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
Options = TypeVar("Options")


def options_from_dict(cls: type[Options], values: dict[str, Any] | None, kind: str) -> Options:
    """A frozen options dataclass from a config mapping; an unknown key is an error that lists the known ones."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values or {}) - names)
    if unknown:
        raise ValueError(f"unknown {kind} {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    return cls(**(values or {}))


@dataclass(frozen=True)
class AppConfig:
    model: str | None = None  # checkpoint directory or Hub repo id; None: the embedded default model
    device: str = "auto"  # auto: cuda when the Ray cluster has GPUs, else cpu
    dtype: str = "auto"  # auto: bfloat16 on cuda, float32 on cpu
    compile: bool | None = None  # torch.compile the encoder; None: on cuda only (CPU inductor warm-up takes minutes)
    batch_sizes: tuple[int, ...] = Buckets.batch_sizes
    frame_counts: tuple[int, ...] = Buckets.frame_counts
    context_seconds: float = DEFAULT_CONTEXT_SECONDS
    max_upload_mb: float = 100.0
    max_audio_seconds: float = 3 * 3600.0  # an upload that decodes to longer gets 413, found before it is decoded
    max_stream_seconds: float = 3 * 3600.0  # a /v1/realtime session is closed when its audio runs past this
    upload_idle_timeout_s: float = 30.0  # a request whose body stops arriving for this long gets 408
    encoder_threads: int | None = None  # CPU threads of a cpu encoder replica; None: cpu_threads() decides
    # Transcriber (ingress) replicas where the config gives no autoscaling_config (`parakeet serve`): two, so that
    # when one dies the proxy sends new requests to the other while Serve replaces it.
    ingress_replicas: int = 2
    stream_max_backlog_s: float = 30.0  # a stream whose audio runs this far ahead of transcription is refused
    stream_idle_timeout_s: float = 30.0  # a stream that sends nothing for this long is closed
    # API keys clients must send (deployments/auth.py), besides those of api_key_file and $PARAKEET_API_KEY on the
    # ingress's node; none at all: every client is let in.
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    api_key_file: str | None = None  # keys one a line, read on the ingress's node
    # Decoding (model.decoding.DecodingOptions): hotwords every request gets, beside its own `hotwords` and
    # `prompt`; the beam size of requests that name none (None: greedy, or 4 with hotwords); a KenLM word LM on
    # the ingress's node, scoring every CTC request's beam search.
    hotwords: tuple[str, ...] = ()
    beam_size: int | None = None
    lm_path: str | None = None
    lm_alpha: float = DecodingOptions.lm_alpha
    lm_beta: float = DecodingOptions.lm_beta

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        object.__setattr__(self, "batch_sizes", tuple(self.batch_sizes))
        object.__setattr__(self, "frame_counts", tuple(self.frame_counts))
        object.__setattr__(self, "api_keys", tuple(self.api_keys))
        object.__setattr__(self, "hotwords", tuple(self.hotwords))
        self.decoding()  # raises HotwordError (a ValueError) for bad hotwords, ValueError for a bad beam size
        for name in (
            "max_upload_mb",
            "max_audio_seconds",
            "max_stream_seconds",
            "upload_idle_timeout_s",
            "ingress_replicas",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        check_threads("encoder_threads", self.encoder_threads)
        Buckets(self.batch_sizes, self.frame_counts)  # raises ValueError for bad buckets

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> AppConfig:
        return options_from_dict(cls, values, "application option(s)")

    @property
    def buckets(self) -> Buckets:
        return Buckets(self.batch_sizes, self.frame_counts)

    @property
    def model_name(self) -> str:
        return checkpoint.model_name(self.model)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def torch_dtype(self, device: str) -> torch.dtype:
        return DTYPES[self.dtype] or default_dtype(device)

    def compiles_on(self, device: str) -> bool:
        return self.compile if self.compile is not None else device == "cuda"

    def decoding(self, hotwords: Iterable[str | Hotword] = (), beam_size: int | None = None) -> DecodingOptions:
        """A request's decoding options: the deployment's hotwords and the request's (whose weights win), the
        request's beam size or the deployment's."""
        return decoding_options(
            [*self.hotwords, *hotwords],
            beam_size if beam_size is not None else self.beam_size,
            self.lm_path,
            self.lm_alpha,
            self.lm_beta,
        )


@dataclass(frozen=True)
class Batching:
    """How a stage's replica gathers concurrent calls into one batch: its `user_config` (serve_config.yaml's
    `deployments:` section), applied by `reconfigure` without restarting or re-warming the replica."""

    # How long the first call of a batch waits for others to join it. 0: none, so a lone request never waits; under
    # load batches still form, of the calls that queued while the stage was busy with the batch before.
    batch_wait_timeout_s: float = 0.0
    # Windows per batch at the Encoder, requests at the decoder; None: the stage's own (the encoder's largest bucket).
    max_batch_size: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.batch_wait_timeout_s <= 10:
            raise ValueError(f"batch_wait_timeout_s must be 0 to 10 seconds, got {self.batch_wait_timeout_s}")
        if self.max_batch_size is not None and self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {self.max_batch_size}")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> Batching:
        return options_from_dict(cls, values, "user_config key(s)")


ENCODER_BATCHING = Batching()  # windows per batch: the largest batch bucket's size
DECODER_BATCHING = Batching(max_batch_size=32)  # requests whose transducer greedy loop runs as one batch
