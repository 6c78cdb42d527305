"""The plain Python API: `load_model()` and `Parakeet.transcribe()`."""

from __future__ import annotations

import gc
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from model import checkpoint
from model.audio import SAMPLE_RATE, AudioError, AudioSource, load_audio
from model.config import FeatureConfig, ModelConfig, RNNTConfig, encoder_frame_samples, write_json
from model.decoding import Transcript, greedy_spans, transcript_from_spans
from model.features import LogMelFeatures, pad_waveforms
from model.heads import Network
from model.tokenizer import Tokenizer


class Parakeet:
    """A loaded checkpoint: feature extractor, encoder + CTC head or transducer, tokenizer."""

    def __init__(self, config: ModelConfig, feature_config: FeatureConfig, network: Network, tokenizer: Tokenizer) -> None:
        if tokenizer.vocab_size != config.vocab_size:
            raise checkpoint.CheckpointError(
                f"tokenizer has {tokenizer.vocab_size} tokens but config.json says vocab_size={config.vocab_size}"
            )
        self.config = config
        self.feature_config = feature_config
        self.features = LogMelFeatures(feature_config)
        self.network = network.eval()
        self.tokenizer = tokenizer
        self.name = "parakeet"

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @property
    def frame_seconds(self) -> float:
        """Seconds per encoder frame (80 ms for the official models)."""
        return encoder_frame_samples(self.feature_config, self.config.encoder_config) / SAMPLE_RATE

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Parakeet:
        self.network.to(device=device, dtype=dtype)
        self.features.to(device=device)
        return self

    def check_length(self, audio: np.ndarray, name: str) -> None:
        """Reject audio too short for one feature frame pair or too long for the position table."""
        if len(audio) < self.features.min_samples:
            raise AudioError(
                f"{name}: audio too short ({len(audio)} samples; at least {self.features.min_samples} are needed)"
            )
        stft_frames = torch.tensor([1 + len(audio) // self.feature_config.hop_length])
        frames = int(self.network.encoder.output_lengths(stft_frames))
        limit = self.config.encoder_config.max_position_embeddings
        if frames > limit:
            raise AudioError(
                f"{name}: audio too long ({len(audio) / SAMPLE_RATE:.1f} s gives {frames} encoder frames; "
                f"this model's position table holds {limit}, about {limit * self.frame_seconds:.0f} s)"
            )

    def load(self, sources: Sequence[AudioSource], sample_rate: int = SAMPLE_RATE) -> list[np.ndarray]:
        """Decode, down-mix, resample and check every input, naming the bad one in any error."""
        waveforms = []
        for index, source in enumerate(sources):
            name = str(source) if isinstance(source, (str, os.PathLike)) else f"input {index}"
            audio = load_audio(source, sample_rate, name)
            self.check_length(audio, name)
            waveforms.append(audio)
        return waveforms

    @torch.inference_mode()
    def transcribe_waveforms(self, waveforms: list[np.ndarray]) -> list[Transcript]:
        """One padded batch of checked 16 kHz waveforms -> transcripts in the same order."""
        batch, lengths = pad_waveforms(waveforms)
        features, frame_lengths = self.features(batch.to(self.device), lengths.to(self.device))
        dtype = next(self.network.parameters()).dtype
        output, output_lengths = self.network(features.to(dtype), frame_lengths)
        return [
            transcript_from_spans(spans, self.tokenizer, self.frame_seconds, len(waveform) / SAMPLE_RATE)
            for waveform, spans in zip(waveforms, greedy_spans(self.network, output, output_lengths))
        ]

    def transcribe(
        self,
        inputs: AudioSource | Sequence[AudioSource],
        sample_rate: int = SAMPLE_RATE,
        batch_size: int = 8,
    ) -> list[Transcript]:
        """Numpy arrays at `sample_rate`, encoded bytes or audio file paths -> one Transcript each, in order.

        Inputs are batched longest-first so padding stays small; batching never changes a result.
        """
        if isinstance(inputs, (str, os.PathLike, bytes, np.ndarray)):
            inputs = [inputs]
        waveforms = self.load(inputs, sample_rate)
        order = sorted(range(len(waveforms)), key=lambda i: -len(waveforms[i]))
        results: list[Transcript | None] = [None] * len(waveforms)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            for index, transcript in zip(chunk, self.transcribe_waveforms([waveforms[i] for i in chunk])):
                results[index] = transcript
        return results  # type: ignore[return-value]

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write the Hugging Face layout, loadable here and by `transformers`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_json(directory / checkpoint.CONFIG_FILE, self.config.to_dict())
        write_json(directory / checkpoint.PREPROCESSOR_FILE, self.feature_config.to_dict())
        self.tokenizer.save(directory / checkpoint.TOKENIZER_FILE)
        write_json(
            directory / checkpoint.TOKENIZER_CONFIG_FILE,
            {
                "tokenizer_class": "ParakeetTokenizer",
                "processor_class": "ParakeetProcessor",
                "pad_token": self.tokenizer.piece(self.config.pad_token_id),
                "unk_token": self.tokenizer.piece(0),
                "clean_up_tokenization_spaces": False,
            },
        )
        if isinstance(self.config, RNNTConfig):
            write_json(directory / checkpoint.GENERATION_FILE, self.config.generation_dict())
        checkpoint.save_weights(self.network, directory)


QUANTIZATIONS = (None, "int8")


def load_model(
    name_or_path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    quantize: str | None = None,
) -> Parakeet:
    """Load a checkpoint directory (or Hub repo id); with no argument, the embedded default model.

    `quantize="int8"` (CPU only) runs every `nn.Linear` with int8 weights and activations quantised on the fly
    (dynamic quantisation): faster CPU serving at a small cost in accuracy (see BENCHMARKS.md).
    """
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}")
    if quantize and (torch.device(device).type != "cpu" or dtype != torch.float32):
        raise ValueError(f"quantize={quantize!r} runs on CPU in float32 only, not on {device} in {dtype}")
    directory = checkpoint.resolve(name_or_path)
    config, feature_config = checkpoint.read_configs(directory)
    network = checkpoint.read_network(directory, config)
    if quantize == "int8":
        with warnings.catch_warnings():
            # torch.ao's quantisation is deprecated in favour of the separate torchao package; it still does the job.
            warnings.filterwarnings("ignore", "torch.ao.quantization is deprecated", DeprecationWarning)
            warnings.filterwarnings("ignore", "torch.quantize_per_tensor", UserWarning)
            torch.ao.quantization.quantize_dynamic(network, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
        gc.collect()  # the float32 Linear modules it replaced sit in reference cycles: free their memory now
    model = Parakeet(config, feature_config, network, checkpoint.read_tokenizer(directory, config))
    model.name = checkpoint.model_name(name_or_path)
    return model.to(device, dtype)
