"""Random-weight reference checkpoints: transformers models saved in the official Hugging Face layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.sentences import sentence_pool
from pipeline.vocabulary import train_tokenizer

SHARED_AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"

SMALL_ENCODER = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    subsampling_conv_channels=32,
    conv_kernel_size=9,
)
# nvidia/parakeet-ctc-0.6b
REAL_ENCODER = dict(
    hidden_size=1024,
    num_hidden_layers=24,
    num_attention_heads=8,
    intermediate_size=4096,
    subsampling_conv_channels=256,
    conv_kernel_size=9,
)


@dataclass
class ReferenceCheckpoint:
    directory: Path
    model: "object"  # transformers.ParakeetForCTC in eval mode
    tokenizer: "object"  # transformers.ParakeetTokenizer


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Perturb what the initialiser leaves constant (norms, biases, batch-norm statistics) so every path is tested."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            noise = torch.randn(tensor.shape, generator=generator) * 0.1
            if name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
            elif name.endswith((".bias", "bias_u", "bias_v", "running_mean")):
                tensor.copy_(noise)
            elif name.endswith(".weight") and tensor.dim() == 1:  # layer and batch norm scales
                tensor.copy_(1.0 + noise)


def make_reference_checkpoint(
    directory: Path, encoder: dict, vocab_size: int, seed: int = 0, **encoder_overrides
) -> ReferenceCheckpoint:
    from transformers import (
        ParakeetCTCConfig,
        ParakeetEncoderConfig,
        ParakeetFeatureExtractor,
        ParakeetForCTC,
        ParakeetProcessor,
        ParakeetTokenizer,
    )

    torch.manual_seed(seed)
    encoder_config = ParakeetEncoderConfig(**{**encoder, **encoder_overrides})
    config = ParakeetCTCConfig(encoder_config=encoder_config.to_dict(), vocab_size=vocab_size, pad_token_id=vocab_size - 1)
    model = ParakeetForCTC(config).eval()
    randomize(model, seed)
    model.save_pretrained(directory)
    tokenizer = ParakeetTokenizer(
        tokenizer_object=train_tokenizer(sentence_pool(4000, seed=1), vocab_size),
        pad_token="<pad>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
    )
    ParakeetProcessor(feature_extractor=ParakeetFeatureExtractor(), tokenizer=tokenizer).save_pretrained(directory)
    return ReferenceCheckpoint(directory, model, tokenizer)
