"""Configuration dataclasses, read from (and written back to) the checkpoint's JSON files.

Field names and defaults are those of the Hugging Face `config.json` / `preprocessor_config.json`, so a
checkpoint saved by `transformers` loads unchanged and one saved here loads in `transformers`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from model.audio import SAMPLE_RATE

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file that does not describe a model this package can run."""


def _from_dict(cls: type[T], values: dict[str, Any]) -> T:
    """Build a dataclass from a dict, keeping known keys (the JSON files carry bookkeeping we ignore)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


@dataclass(frozen=True)
class FeatureConfig:
    """Log-mel front end (`preprocessor_config.json`)."""

    feature_size: int = 80
    sampling_rate: int = SAMPLE_RATE
    hop_length: int = 160
    n_fft: int = 512
    win_length: int = 400
    preemphasis: float | None = 0.97
    padding_value: float = 0.0

    def __post_init__(self) -> None:
        if self.sampling_rate != SAMPLE_RATE:
            raise ConfigError(f"preprocessor sampling_rate is {self.sampling_rate}; only {SAMPLE_RATE} Hz is supported")
        if not 0 < self.win_length <= self.n_fft:
            raise ConfigError(f"win_length {self.win_length} must be in (0, n_fft={self.n_fft}]")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FeatureConfig:
        return _from_dict(cls, values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature_extractor_type": "ParakeetFeatureExtractor",
            **dataclasses.asdict(self),
            "padding_side": "right",
            "return_attention_mask": True,
        }


@dataclass(frozen=True)
class EncoderConfig:
    """FastConformer encoder (`config.json` -> `encoder_config`)."""

    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 8
    intermediate_size: int = 4096
    hidden_act: str = "silu"
    attention_bias: bool = True
    convolution_bias: bool = True
    conv_kernel_size: int = 9
    subsampling_factor: int = 8
    subsampling_conv_channels: int = 256
    num_mel_bins: int = 80
    subsampling_conv_kernel_size: int = 3
    subsampling_conv_stride: int = 2
    dropout: float = 0.1
    dropout_positions: float = 0.0
    layerdrop: float = 0.1
    activation_dropout: float = 0.1
    attention_dropout: float = 0.1
    max_position_embeddings: int = 5000
    scale_input: bool = True
    initializer_range: float = 0.02
    num_key_value_heads: int | None = None  # fewer than the query heads: grouped keys and values; None: as many

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}"
            )
        if self.key_value_heads < 1 or self.num_attention_heads % self.key_value_heads:
            raise ConfigError(
                f"num_attention_heads {self.num_attention_heads} is not a multiple of num_key_value_heads "
                f"{self.key_value_heads}"
            )
        if self.subsampling_conv_stride**self.num_subsampling_layers != self.subsampling_factor:
            raise ConfigError(
                f"subsampling_factor {self.subsampling_factor} is not a power of the stride "
                f"{self.subsampling_conv_stride}"
            )

    @property
    def key_value_heads(self) -> int:
        """Heads of the keys and values, each shared by num_attention_heads / key_value_heads query heads."""
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def num_subsampling_layers(self) -> int:
        factor, layers = self.subsampling_factor, 0
        while factor > 1:
            factor //= self.subsampling_conv_stride
            layers += 1
        return layers

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EncoderConfig:
        return _from_dict(cls, values)

    def to_dict(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "model_type": "parakeet_encoder",
            "num_key_value_heads": self.key_value_heads,
        }


@dataclass(frozen=True)
class CTCConfig:
    """Encoder + CTC head (`config.json` of a `ParakeetForCTC` checkpoint). The blank is `pad_token_id`."""

    vocab_size: int = 1025
    pad_token_id: int = 1024
    ctc_loss_reduction: str = "mean"
    ctc_zero_infinity: bool = True
    encoder_config: EncoderConfig = field(default_factory=EncoderConfig)

    model_type = "parakeet_ctc"

    def __post_init__(self) -> None:
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(
                f"pad_token_id (the CTC blank) {self.pad_token_id} is outside vocab_size {self.vocab_size}"
            )

    @property
    def blank_id(self) -> int:
        return self.pad_token_id

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CTCConfig:
        model_type = values.get("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ConfigError(f"model_type {model_type!r} is not supported; expected {cls.model_type!r}")
        encoder = EncoderConfig.from_dict(values.get("encoder_config") or {})
        return _from_dict(cls, {**values, "encoder_config": encoder})

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["encoder_config"] = self.encoder_config.to_dict()
        return {"architectures": ["ParakeetForCTC"], "model_type": self.model_type, **values}


@dataclass(frozen=True)
class RNNTConfig:
    """Encoder + RNN-T prediction network and joint (`config.json` of a `ParakeetForRNNT` checkpoint).

    `vocab_size` counts the blank, the joint's last token output; `pad_token_id` only pads training labels."""

    vocab_size: int = 8193
    decoder_hidden_size: int = 640
    num_decoder_layers: int = 2
    hidden_act: str = "relu"
    max_symbols_per_step: int = 10
    pad_token_id: int = 2
    blank_token_id: int = 8192
    durations: tuple[int, ...] = ()  # TDT only: the frame advances its joint can predict
    encoder_config: EncoderConfig = field(default_factory=EncoderConfig)

    model_type = "parakeet_rnnt"
    architecture = "ParakeetForRNNT"

    def __post_init__(self) -> None:
        object.__setattr__(self, "durations", tuple(self.durations))
        if not 0 <= self.blank_token_id < self.vocab_size:
            raise ConfigError(f"blank_token_id {self.blank_token_id} is outside vocab_size {self.vocab_size}")
        if self.max_symbols_per_step < 1:
            raise ConfigError(f"max_symbols_per_step must be at least 1, got {self.max_symbols_per_step}")
        if (self.model_type == TDTConfig.model_type) != bool(self.durations) or min(self.durations, default=0) < 0:
            raise ConfigError(
                f"{self.model_type}: durations {list(self.durations)} must be frame counts >= 0, present for TDT only"
            )

    @property
    def blank_id(self) -> int:
        return self.blank_token_id

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RNNTConfig:
        encoder = EncoderConfig.from_dict(values.get("encoder_config") or {})
        return _from_dict(cls, {**values, "encoder_config": encoder})

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["encoder_config"] = self.encoder_config.to_dict()
        if not self.durations:
            del values["durations"]
        return {
            "architectures": [self.architecture],
            "model_type": self.model_type,
            "is_encoder_decoder": True,
            **values,
        }

    def generation_dict(self) -> dict[str, Any]:
        """`generation_config.json`, so that transformers' generate() starts from the blank, as we decode, and
        never takes a duration output for a token."""
        vocab = self.vocab_size
        return {
            "decoder_start_token_id": self.blank_token_id,
            "pad_token_id": self.pad_token_id,
            "suppress_tokens": list(range(vocab, vocab + len(self.durations))),
        }


@dataclass(frozen=True)
class TDTConfig(RNNTConfig):
    """RNN-T whose joint also predicts how many frames to advance (`config.json` of a `ParakeetForTDT` checkpoint)."""

    durations: tuple[int, ...] = (0, 1, 2, 3, 4)

    model_type = "parakeet_tdt"
    architecture = "ParakeetForTDT"


ModelConfig = CTCConfig | RNNTConfig  # TDTConfig is an RNNTConfig
MODEL_CONFIGS: dict[str, type[CTCConfig] | type[RNNTConfig]] = {
    config.model_type: config for config in (CTCConfig, RNNTConfig, TDTConfig)
}


def model_config_from_dict(values: dict[str, Any]) -> ModelConfig:
    """The config class that `model_type` names (CTC when absent, as in early checkpoints)."""
    model_type = values.get("model_type", CTCConfig.model_type)
    if model_type not in MODEL_CONFIGS:
        raise ConfigError(f"model_type {model_type!r} is not supported; expected one of {', '.join(MODEL_CONFIGS)}")
    return MODEL_CONFIGS[model_type].from_dict(values)


@dataclass(frozen=True)
class FrameTiming:
    """Where encoder output frames fall in the audio: one every `samples` samples at SAMPLE_RATE (the feature hop
    times the subsampling: 1280 samples, 80 ms, for the official models). The one place this is derived."""

    samples: int

    @classmethod
    def of(cls, features: FeatureConfig, encoder: EncoderConfig) -> FrameTiming:
        return cls(features.hop_length * encoder.subsampling_factor)

    @property
    def seconds(self) -> float:
        return self.samples / SAMPLE_RATE

    def frames(self, seconds: float) -> int:
        """`seconds` in whole encoder frames (rounded)."""
        return round(seconds / self.seconds)


def blank_id_for(vocab_size: int) -> int:
    """The blank's id in a vocabulary of `vocab_size`: the last, after every piece, as in the official checkpoints
    (and in the tokenizers recipe.vocabulary and `parakeet convert` write)."""
    return vocab_size - 1


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file is missing") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None


def write_json(path: Path, values: dict[str, Any]) -> None:
    path.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
