"""Pure-PyTorch Parakeet: features, FastConformer encoder, CTC and RNN-T/TDT heads, decoding, checkpoint loading."""

from model.api import Parakeet, load_model
from model.audio import SAMPLE_RATE, AudioError, load_audio
from model.checkpoint import CheckpointError
from model.config import ConfigError, CTCConfig, EncoderConfig, FeatureConfig, RNNTConfig, TDTConfig
from model.decoding import Transcript, Word
from model.heads import ParakeetCTC, ParakeetTransducer

__all__ = [
    "SAMPLE_RATE",
    "AudioError",
    "CTCConfig",
    "CheckpointError",
    "ConfigError",
    "EncoderConfig",
    "FeatureConfig",
    "Parakeet",
    "ParakeetCTC",
    "ParakeetTransducer",
    "RNNTConfig",
    "TDTConfig",
    "Transcript",
    "Word",
    "load_audio",
    "load_model",
]
