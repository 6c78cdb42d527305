"""Pure-PyTorch Parakeet: features, FastConformer encoder, CTC head, decoding, checkpoint loading."""

from model.api import Parakeet, load_model
from model.audio import SAMPLE_RATE, AudioError, load_audio
from model.checkpoint import CheckpointError
from model.config import ConfigError, CTCConfig, EncoderConfig, FeatureConfig
from model.decoding import Transcript, Word
from model.heads import ParakeetCTC

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
    "Transcript",
    "Word",
    "load_audio",
    "load_model",
]
