"""The Hugging Face checkpoint layout: config.json, model.safetensors (or shards + index),
tokenizer.json, preprocessor_config.json. Reading checks every tensor name and shape."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from model.config import ConfigError, FeatureConfig, ModelConfig, RNNTConfig, model_config_from_dict, read_json
from model.heads import Network, TransducerDecoder, build_network
from model.tokenizer import Tokenizer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILE = "tokenizer.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"  # tells transformers which tokenizer class and blank to use
PROCESSOR_FILE = "processor_config.json"  # transformers >= 5 nests the feature extractor's settings here
GENERATION_FILE = "generation_config.json"  # transformers' generate() settings; transducers need them
HUB_FILES = [
    CONFIG_FILE,
    PREPROCESSOR_FILE,
    PROCESSOR_FILE,
    TOKENIZER_FILE,
    TOKENIZER_CONFIG_FILE,
    "*.safetensors",
    WEIGHTS_INDEX_FILE,
]
REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
DEFAULT_MODEL_DIR = Path(__file__).parent / "default"  # the small model the project trains and ships
DEFAULT_MODEL_NAME = "parakeet-ctc-default"  # how the embedded model is named to users (outputs, /v1/models)


class CheckpointError(ValueError):
    """A checkpoint directory that is incomplete or does not match the model its config describes."""


def resolve(name_or_path: str | os.PathLike | None) -> Path:
    """None (the embedded default), a local directory, or a Hub repo id (e.g. nvidia/parakeet-ctc-0.6b)."""
    if name_or_path is None:
        if not (DEFAULT_MODEL_DIR / CONFIG_FILE).is_file():
            raise CheckpointError(f"no embedded default model in {DEFAULT_MODEL_DIR}; pass a checkpoint directory")
        return DEFAULT_MODEL_DIR
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    name = str(name_or_path)
    if not REPO_ID.match(name) or path.exists():
        raise CheckpointError(f"{name}: not a checkpoint directory")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError(
            f"{name}: no such directory; to download it from the Hugging Face Hub install the 'hub' extra "
            "(pip install 'parakeet-serve[hub]')"
        ) from None
    return Path(snapshot_download(name, allow_patterns=HUB_FILES))


def model_name(name_or_path: str | os.PathLike | None) -> str:
    """The name users see: the embedded model's, a directory's own name, or the Hub repo id."""
    if name_or_path is None:
        return DEFAULT_MODEL_NAME
    path = Path(name_or_path).expanduser()
    return path.resolve().name if path.is_dir() else str(name_or_path)


def read_feature_settings(directory: Path) -> dict:
    """The feature extractor's settings: `preprocessor_config.json`, or the section of `processor_config.json`."""
    if (directory / PREPROCESSOR_FILE).is_file():
        return read_json(directory / PREPROCESSOR_FILE)
    if (directory / PROCESSOR_FILE).is_file():
        settings = read_json(directory / PROCESSOR_FILE).get("feature_extractor")
        if isinstance(settings, dict):
            return settings
    raise CheckpointError(f"{directory}: no {PREPROCESSOR_FILE} (nor a feature_extractor in {PROCESSOR_FILE})")


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files holding the weights: the single file, or the shards its index names."""
    single, index = directory / WEIGHTS_FILE, directory / WEIGHTS_INDEX_FILE
    if single.is_file():
        return [single]
    if index.is_file():
        try:
            shards = sorted(set(read_json(index)["weight_map"].values()))
        except (KeyError, AttributeError, ConfigError) as err:
            raise CheckpointError(f"{index}: not a safetensors index ({err})") from None
        missing = [name for name in shards if not (directory / name).is_file()]
        if missing:
            raise CheckpointError(
                f"{directory}: shards named in {WEIGHTS_INDEX_FILE} are missing: {', '.join(missing)}"
            )
        return [directory / name for name in shards]
    raise CheckpointError(f"{directory}: neither {WEIGHTS_FILE} nor {WEIGHTS_INDEX_FILE} found")


def read_state_dict(directory: Path, prefixes: tuple[str, ...] = ("",)) -> dict[str, torch.Tensor]:
    """The tensors whose names start with one of `prefixes` (all of them by default)."""
    state: dict[str, torch.Tensor] = {}
    for file in weight_files(directory):
        try:
            with safe_open(str(file), framework="pt") as tensors:
                for name in tensors.keys():
                    if name.startswith(prefixes):
                        state[name] = tensors.get_tensor(name)
        except Exception as err:  # safetensors raises its own untyped errors for corrupt files
            raise CheckpointError(f"{file}: cannot read safetensors file ({err})") from None
    return state


def load_weights(module: nn.Module, directory: Path, prefixes: tuple[str, ...] = ("",)) -> None:
    """Fill `module` from the checkpoint's tensors under `prefixes`."""
    check_and_load(module, read_state_dict(directory, prefixes), str(directory))


def check_and_load(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Fill `module` from `state` after checking that names and shapes match exactly; errors name `source`."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{name} {tuple(state[name].shape)} != expected {tuple(expected[name].shape)}"
        for name in sorted(set(state) & set(expected))
        if state[name].shape != expected[name].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing tensors: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {'; '.join(mismatched)}")
    if problems:
        raise CheckpointError(f"{source}: weights do not match {CONFIG_FILE}: " + " | ".join(problems))
    module.load_state_dict({name: tensor.to(expected[name].dtype) for name, tensor in state.items()})


def save_weights(module: nn.Module, directory: Path) -> None:
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in module.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})


def read_configs(directory: Path) -> tuple[ModelConfig, FeatureConfig]:
    """The model's and the feature extractor's configuration, without touching the weights."""
    config = model_config_from_dict(read_json(directory / CONFIG_FILE))
    return config, FeatureConfig.from_dict(read_feature_settings(directory))


def read_tokenizer(directory: Path, config: ModelConfig) -> Tokenizer:
    return Tokenizer.from_file(directory / TOKENIZER_FILE, config.blank_id)


def read_network(directory: Path, config: ModelConfig) -> Network:
    network = build_network(config)
    load_weights(network, directory)
    return network


def read_transducer_decoder(directory: Path, config: RNNTConfig) -> TransducerDecoder:
    """Only the prediction network and joint of a transducer checkpoint: what decoding needs, without the encoder."""
    network = TransducerDecoder(config)
    load_weights(network, directory, prefixes=("decoder.", "joint."))
    return network
