"""The plain Python API: `load_model()` and `Parakeet.transcribe()`."""

from __future__ import annotations

import gc
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model import checkpoint
from model.audio import SAMPLE_RATE, AudioError, AudioSource
from model.biasing import Hotword
from model.config import FeatureConfig, FrameTiming, ModelConfig, RNNTConfig, write_json
from model.decoding import DecodingOptions, Transcript, decoding_options
from model.features import LogMelFeatures
from model.heads import Network, TransducerDecoder
from model.stages import Buckets, Decoder, Encoder, Featurizer, Pipeline, check_position_table
from model.tokenizer import Tokenizer
from model.windows import DEFAULT_CONTEXT_SECONDS


def as_inputs(inputs: AudioSource | Sequence[AudioSource]) -> Sequence[AudioSource]:
    """One input (a path, bytes or an array) or a sequence of them -> a sequence."""
    return [inputs] if isinstance(inputs, (str, os.PathLike, bytes, np.ndarray)) else inputs


def source_name(source: AudioSource, index: int) -> str:
    """How errors name an input: a path as given, anything else by its place."""
    return str(source) if isinstance(source, (str, os.PathLike)) else f"input {index}"


class Parakeet:
    """A loaded checkpoint: feature extractor, encoder + CTC head or transducer, tokenizer; `transcribe` runs them
    through the one pipeline every runner shares (model.stages), so long audio is windowed as the Serve app and the
    batch job window it."""

    def __init__(
        self,
        config: ModelConfig,
        feature_config: FeatureConfig,
        network: Network,
        tokenizer: Tokenizer,
        buckets: Buckets = Buckets(),
        context_seconds: float = DEFAULT_CONTEXT_SECONDS,
        compile: bool = False,
    ) -> None:
        if tokenizer.vocab_size != config.vocab_size:
            raise checkpoint.CheckpointError(
                f"tokenizer has {tokenizer.vocab_size} tokens but config.json says vocab_size={config.vocab_size}"
            )
        check_position_table(config, feature_config, buckets)
        self.config = config
        self.feature_config = feature_config
        self.network = network.eval()
        self.tokenizer = tokenizer
        self.timing = FrameTiming.of(feature_config, config.encoder_config)
        self.name = "parakeet"
        parameter = next(network.parameters())
        self.pipeline = Pipeline(
            Featurizer(feature_config, self.timing, buckets.max_frames, context_seconds),
            Encoder(network, buckets, parameter.device.type, parameter.dtype, compile),
            Decoder(tokenizer, self.timing, network if isinstance(network, TransducerDecoder) else None),
        )

    @property
    def features(self) -> LogMelFeatures:
        return self.pipeline.featurizer.features

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def transcribe_each(
        self, inputs: AudioSource | Sequence[AudioSource], sample_rate: int = SAMPLE_RATE, **decoding: Any
    ) -> Iterator[Transcript | AudioError]:
        """Like `transcribe` (`decoding`: its hotwords, beam_size, lm, lm_alpha and lm_beta), but yields each input's
        result as soon as it is ready, in order: its Transcript, or the AudioError its audio raised, so one bad input
        does not stop the others."""
        lm = decoding.pop("lm", None)
        options = decoding_options(lm_path=lm and os.fspath(lm), **decoding)
        return self.pipeline.transcribe_each(
            ((source, source_name(source, index)) for index, source in enumerate(as_inputs(inputs))),
            sample_rate,
            options,
        )

    def transcribe(
        self,
        inputs: AudioSource | Sequence[AudioSource],
        sample_rate: int = SAMPLE_RATE,
        hotwords: Sequence[str | Hotword] = (),
        beam_size: int | None = None,
        lm: str | os.PathLike | None = None,
        lm_alpha: float = DecodingOptions.lm_alpha,
        lm_beta: float = DecodingOptions.lm_beta,
    ) -> list[Transcript]:
        """Numpy arrays at `sample_rate`, encoded bytes or audio file paths -> one Transcript each, in order.

        Audio longer than the largest window (30 s by default) is cut into overlapping windows joined at their seams;
        silent or empty audio gives "". Raises AudioError, naming the input, for audio that cannot be decoded.

        Decoding is greedy unless it is asked to search: `beam_size` > 1, `hotwords` (phrases, each optionally
        `phrase:weight`, the weight a per-token reward in (0, 10], default 3; HotwordError for ones the model
        cannot spell), or `lm`, a KenLM word language model (ARPA or binary; CTC models; needs `pip install kenlm`)
        weighted `lm_alpha` * ln P(word) + `lm_beta` per word. Hotwords or a language model search a beam of 4
        unless `beam_size` says otherwise."""
        results = []
        decoding = {"hotwords": hotwords, "beam_size": beam_size, "lm": lm, "lm_alpha": lm_alpha, "lm_beta": lm_beta}
        for result in self.transcribe_each(inputs, sample_rate, **decoding):
            if isinstance(result, AudioError):
                raise result
            results.append(result)
        return results

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
    buckets: Buckets = Buckets(),
    context_seconds: float = DEFAULT_CONTEXT_SECONDS,
    compile: bool = False,
) -> Parakeet:
    """Load a checkpoint directory (or Hub repo id); with no argument, the embedded default model.

    `quantize="int8"` (CPU only) runs every `nn.Linear` with int8 weights and activations quantised on the fly
    (dynamic quantisation): faster CPU serving at a small cost in accuracy (see BENCHMARKS.md). `buckets` and
    `context_seconds` set the windows long audio is cut into (the Serve app's and batch job's defaults); `compile`
    runs the encoder compiled, in the buckets' fixed shapes.
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
    model = Parakeet(
        config,
        feature_config,
        network.to(device, dtype),
        checkpoint.read_tokenizer(directory, config),
        buckets,
        context_seconds,
        compile,
    )
    model.name = checkpoint.model_name(name_or_path)
    return model
