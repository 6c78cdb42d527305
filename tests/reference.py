"""Random-weight reference checkpoints: transformers models saved in the official Hugging Face layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from model.config import blank_id_for
from recipe.sentences import sentence_pool
from recipe.vocabulary import train_tokenizer

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


# nvidia/parakeet-tdt-0.6b-v2 (and v3 but for its 8193-token vocabulary)
REAL_TDT_ENCODER = {**REAL_ENCODER, "num_mel_bins": 128}
REAL_DECODER = dict(decoder_hidden_size=640, num_decoder_layers=2)
SMALL_DECODER = dict(decoder_hidden_size=48, num_decoder_layers=2)


@dataclass
class ReferenceCheckpoint:
    directory: Path
    model: object  # transformers.ParakeetForCTC / ParakeetForRNNT / ParakeetForTDT in eval mode
    tokenizer: object  # transformers.ParakeetTokenizer


def relative_error(ours: torch.Tensor, reference: torch.Tensor, valid: torch.Tensor) -> float:
    """Max abs difference over the valid (B, T) positions, relative to the reference's largest value there."""
    valid = valid[..., None]
    return float(((ours - reference).abs() * valid).max() / (reference.abs() * valid).max())


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


def liven_transducer(model: torch.nn.Module, seed: int, blank_bias: float, zero_duration_bias: float) -> None:
    """Make greedy decoding of random weights eventful: blanks, tokens, several emissions at a frame, every duration.

    With the initialiser's small weights (std 0.02) the biases drown what the audio and the previous token add, so
    one token wins everywhere. Unit-gain weights (std 1/sqrt(fan-in)) and unit embeddings let both sway the joint;
    the joint's bias is then centred on random features, so no output wins just by its offset. `blank_bias` sets how
    often the blank wins, and (TDT) `zero_duration_bias` how often a token stays on its frame; as the random
    prediction network does not learn to move on, a frame can otherwise repeat a token until max_symbols_per_step."""
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Embedding)):
                fan_in = 1 if isinstance(module, torch.nn.Embedding) else module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) / fan_in**0.5)
            if isinstance(module, torch.nn.LSTM):
                for name, weight in module.named_parameters():
                    if name.startswith("weight"):
                        weight.copy_(torch.randn(weight.shape, generator=generator) / weight.shape[1] ** 0.5)
        features = torch.randn(1, 400, model.config.encoder_config.num_mel_bins, generator=generator)
        encoded = model.encoder_projector(model.encoder(features).last_hidden_state)
        start = torch.full((1, 1), model.config.blank_token_id)
        logits = model.joint(model.decoder(start)[:, None], encoded[:, :, None])
        model.joint.head.bias.sub_(logits.mean(dim=(0, 1, 2)))
        model.joint.head.bias[model.config.blank_token_id] += blank_bias
        if model.joint.head.out_features > model.config.vocab_size:  # TDT: the first duration is 0
            model.joint.head.bias[model.config.vocab_size] += zero_duration_bias


def save_tokenizer_and_processor(directory: Path, vocab_size: int, num_mel_bins: int) -> object:
    """A SentencePiece-style BPE of `vocab_size` ids, the last the blank `<pad>`, saved with the feature extractor."""
    from transformers import ParakeetFeatureExtractor, ParakeetProcessor, ParakeetTokenizer

    tokenizer = ParakeetTokenizer(
        tokenizer_object=train_tokenizer(sentence_pool(4000, seed=1), vocab_size),
        pad_token="<pad>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
    )
    features = ParakeetFeatureExtractor(feature_size=num_mel_bins)
    ParakeetProcessor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(directory)
    return tokenizer


def make_reference_checkpoint(
    directory: Path, encoder: dict, vocab_size: int, seed: int = 0, **encoder_overrides
) -> ReferenceCheckpoint:
    from transformers import ParakeetCTCConfig, ParakeetEncoderConfig, ParakeetForCTC

    torch.manual_seed(seed)
    encoder_config = ParakeetEncoderConfig(**{**encoder, **encoder_overrides})
    config = ParakeetCTCConfig(
        encoder_config=encoder_config.to_dict(), vocab_size=vocab_size, pad_token_id=blank_id_for(vocab_size)
    )
    model = ParakeetForCTC(config).eval()
    randomize(model, seed)
    model.save_pretrained(directory)
    tokenizer = save_tokenizer_and_processor(directory, vocab_size, encoder_config.num_mel_bins)
    return ReferenceCheckpoint(directory, model, tokenizer)


def make_transducer_checkpoint(
    directory: Path,
    kind: str,
    encoder: dict,
    decoder: dict,
    vocab_size: int,
    seed: int = 0,
    blank_bias: float = 1.0,
    zero_duration_bias: float = -0.3,
    **overrides,
) -> ReferenceCheckpoint:
    """A random `ParakeetForTDT` (kind "tdt") or `ParakeetForRNNT` ("rnnt"); the blank is the last id."""
    from transformers import (
        ParakeetEncoderConfig,
        ParakeetForRNNT,
        ParakeetForTDT,
        ParakeetRNNTConfig,
        ParakeetTDTConfig,
    )

    config_class, model_class = {
        "tdt": (ParakeetTDTConfig, ParakeetForTDT),
        "rnnt": (ParakeetRNNTConfig, ParakeetForRNNT),
    }[kind]
    torch.manual_seed(seed)
    config = config_class(
        encoder_config=ParakeetEncoderConfig(**encoder).to_dict(),
        vocab_size=vocab_size,
        blank_token_id=blank_id_for(vocab_size),
        pad_token_id=blank_id_for(vocab_size),
        **decoder,
        **overrides,
    )
    model = model_class(config).eval()
    randomize(model, seed)
    liven_transducer(model, seed, blank_bias, zero_duration_bias)
    generation = model.generation_config
    generation.decoder_start_token_id = config.blank_token_id
    generation.suppress_tokens = list(range(vocab_size, vocab_size + len(getattr(config, "durations", ()))))
    model.save_pretrained(directory)
    tokenizer = save_tokenizer_and_processor(directory, vocab_size, config.encoder_config.num_mel_bins)
    return ReferenceCheckpoint(directory, model, tokenizer)
