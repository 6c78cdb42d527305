"""Import NVIDIA NeMo `.nemo` checkpoints (CTC, RNN-T, TDT) into the Hugging Face layout.

A `.nemo` file is a tar holding `model_config.yaml`, `model_weights.ckpt` (a torch state dict under NeMo's module
names) and the SentencePiece tokenizer (`*tokenizer.model`). The weights are renamed to the layout `transformers`
uses, the tokenizer becomes a `tokenizers` BPE (`tokenizer.json`) with the blank appended, and the result is saved
with `Parakeet.save_pretrained`. Reading the SentencePiece model needs the `nemo` extra (sentencepiece, protobuf).
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from pathlib import Path
from typing import Any

import torch
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as _Tokenizer

from model.api import Parakeet
from model.checkpoint import check_and_load
from model.config import CTCConfig, EncoderConfig, FeatureConfig, ModelConfig, RNNTConfig, TDTConfig, blank_id_for
from model.heads import build_network
from model.tokenizer import WORD_START, Tokenizer

CONFIG_MEMBER = "model_config.yaml"
WEIGHTS_MEMBER = "model_weights.ckpt"
# NeMo module names -> ours (those of transformers), applied in order to every weight name.
RENAMES = [
    (r"^encoder\.pre_encode\.conv\.", "encoder.subsampling.layers."),
    (r"^encoder\.pre_encode\.out\.", "encoder.subsampling.linear."),
    (r"\.conv\.batch_norm\.", ".conv.norm."),
    (r"\.self_attn\.linear_([qkv])\.", r".self_attn.\1_proj."),
    (r"\.self_attn\.linear_out\.", ".self_attn.o_proj."),
    (r"\.self_attn\.linear_pos\.", ".self_attn.relative_k_proj."),
    (r"\.self_attn\.pos_bias_([uv])$", r".self_attn.bias_\1"),
    (r"^decoder\.decoder_layers\.0\.", "ctc_head."),
    (r"^decoder\.prediction\.embed\.", "decoder.embedding."),
    (r"^decoder\.prediction\.dec_rnn\.lstm\.", "decoder.lstm."),
    (r"^joint\.enc\.", "encoder_projector."),
    (r"^joint\.pred\.", "decoder.decoder_projector."),
    (r"^joint\.joint_net\.2\.", "joint.head."),
]
# Tensors with no place in our model: the feature extractor's window and filterbank (we compute them), the
# position table (rebuilt on the fly), and the auxiliary CTC head of hybrid TDT-CTC models.
DROPPED = re.compile(r"^(preprocessor\.|encoder\.pos_enc\.|ctc_decoder\.)")


class NemoError(ValueError):
    """A `.nemo` file this importer cannot read or convert."""


def read_nemo(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], bytes]:
    """The model config, the state dict and the SentencePiece model of a `.nemo` tar."""
    import yaml

    try:
        with tarfile.open(path) as archive:
            members = {Path(m.name).name: m for m in archive.getmembers() if m.isfile()}
            missing = [name for name in (CONFIG_MEMBER, WEIGHTS_MEMBER) if name not in members]
            if missing:
                raise NemoError(
                    f"{path}: no {' or '.join(missing)} in the archive (it holds {', '.join(sorted(members))})"
                )
            config = yaml.safe_load(archive.extractfile(members[CONFIG_MEMBER]))
            weights = archive.extractfile(members[WEIGHTS_MEMBER]).read()
            tokenizer = archive.extractfile(members[tokenizer_member(path, config, members)]).read()
    except (tarfile.TarError, OSError) as err:
        raise NemoError(f"{path}: not a readable .nemo (tar) file ({err})") from None
    state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    return config, state.get("state_dict", state), tokenizer


def tokenizer_member(path: Path, config: dict[str, Any], members: dict[str, tarfile.TarInfo]) -> str:
    """The SentencePiece model the config names (`nemo:<file>`), else the archive's only `*.model`."""
    named = Path(str((config.get("tokenizer") or {}).get("model", "")).removeprefix("nemo:")).name
    if named in members:
        return named
    candidates = [name for name in members if name.endswith(".model")]
    if len(candidates) != 1:
        raise NemoError(
            f"{path}: cannot tell which SentencePiece model is the tokenizer (found {candidates or 'none'});"
            " only BPE-tokenized models are supported"
        )
    return candidates[0]


def rename(name: str) -> str:
    for pattern, replacement in RENAMES:
        name = re.sub(pattern, replacement, name)
    return name


def feature_config(preprocessor: dict[str, Any]) -> FeatureConfig:
    if preprocessor.get("normalize", "per_feature") != "per_feature":
        raise NemoError(f"preprocessor normalize={preprocessor['normalize']!r} is not supported (only per_feature)")
    rate = preprocessor.get("sample_rate", 16000)
    return FeatureConfig(
        feature_size=preprocessor.get("features", 80),
        sampling_rate=rate,
        hop_length=round(preprocessor.get("window_stride", 0.01) * rate),
        win_length=round(preprocessor.get("window_size", 0.025) * rate),
        n_fft=preprocessor.get("n_fft") or 512,
        preemphasis=preprocessor.get("preemph", 0.97),
        padding_value=preprocessor.get("pad_value", 0.0),
    )


def encoder_config(encoder: dict[str, Any]) -> EncoderConfig:
    for key, supported in (
        ("subsampling", "dw_striding"),
        ("self_attention_model", "rel_pos"),
        ("conv_norm_type", "batch_norm"),
    ):
        if encoder.get(key, supported) != supported:
            raise NemoError(f"encoder {key}={encoder[key]!r} is not supported (only {supported})")
    hidden = encoder["d_model"]
    channels = encoder.get("subsampling_conv_channels", -1)
    bias = encoder.get("use_bias", True)
    return EncoderConfig(
        hidden_size=hidden,
        num_hidden_layers=encoder["n_layers"],
        num_attention_heads=encoder["n_heads"],
        intermediate_size=int(hidden * encoder.get("ff_expansion_factor", 4)),
        attention_bias=bias,
        convolution_bias=bias,
        conv_kernel_size=encoder.get("conv_kernel_size", 31),
        subsampling_factor=encoder.get("subsampling_factor", 8),
        subsampling_conv_channels=hidden if channels == -1 else channels,  # NeMo's -1: as wide as the model
        num_mel_bins=encoder["feat_in"],
        dropout=encoder.get("dropout", 0.1),
        dropout_positions=encoder.get("dropout_emb", 0.0),
        attention_dropout=encoder.get("dropout_att", 0.1),
        activation_dropout=encoder.get("dropout", 0.1),
        layerdrop=encoder.get("stochastic_depth_drop_prob", 0.0),
        max_position_embeddings=encoder.get("pos_emb_max_len", 5000),
        scale_input=encoder.get("xscaling", True),
    )


def model_config(config: dict[str, Any], state: dict[str, torch.Tensor]) -> ModelConfig:
    """CTC when the weights hold a convolutional CTC decoder, else a transducer: TDT when durations are configured."""
    encoder = encoder_config(config["encoder"])
    if "decoder.decoder_layers.0.weight" in state:
        vocab_size = state["decoder.decoder_layers.0.weight"].shape[0]  # the tokenizer's pieces + the blank
        return CTCConfig(vocab_size=vocab_size, pad_token_id=blank_id_for(vocab_size), encoder_config=encoder)
    labels = config.get("labels") or config["joint"].get("vocabulary") or []
    prediction, joint = config["decoder"].get("prednet", {}), config["joint"].get("jointnet", {})
    hidden = prediction.get("pred_hidden", 640)
    if joint.get("joint_hidden", hidden) != hidden:
        raise NemoError(
            f"joint_hidden {joint['joint_hidden']} differs from pred_hidden {hidden}; the Hugging Face "
            "layout has one size for both"
        )
    durations = (
        config.get("model_defaults", {}).get("tdt_durations") or config.get("decoding", {}).get("durations") or []
    )
    kind = TDTConfig if durations else RNNTConfig
    return kind(
        vocab_size=len(labels) + 1,
        decoder_hidden_size=hidden,
        num_decoder_layers=prediction.get("pred_rnn_layers", 2),
        hidden_act=joint.get("activation", "relu"),
        max_symbols_per_step=(config.get("decoding", {}).get("greedy") or {}).get("max_symbols") or 10,
        pad_token_id=labels.index("<pad>") if "<pad>" in labels else len(labels),
        blank_token_id=len(labels),
        durations=tuple(durations),
        encoder_config=encoder,
    )


def bpe_merges(pieces: list[tuple[str, float]]) -> list[tuple[str, str]]:
    """The merges that rebuild each piece from two shorter ones, the best-scored (earliest learned) piece first,
    which is the order SentencePiece's BPE applies them in."""
    ids = {piece: index for index, (piece, _) in enumerate(pieces)}
    merges = []
    for piece, score in pieces:
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in ids and right in ids:
                merges.append((-score, ids[piece], ids[left], ids[right], left, right))
    return [(left, right) for *_, left, right in sorted(merges)]


def sentencepiece_to_tokenizers(model: bytes) -> _Tokenizer:
    """A SentencePiece BPE model -> the equivalent `tokenizers` tokenizer (same ids, pieces and text)."""
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError:
        raise NemoError(
            "reading the .nemo tokenizer needs sentencepiece and protobuf: pip install 'parakeet-serve[nemo]'"
        ) from None
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model)
    if proto.trainer_spec.model_type != sentencepiece_model_pb2.TrainerSpec.BPE:
        raise NemoError("the tokenizer is not a SentencePiece BPE model; only BPE is supported")
    pieces = [(p.piece, p.score) for p in proto.pieces]
    unk = proto.pieces[proto.trainer_spec.unk_id].piece
    tokenizer = _Tokenizer(
        models.BPE(
            dict((piece, i) for i, (piece, _) in enumerate(pieces)),
            bpe_merges(pieces),
            unk_token=unk,
            fuse_unk=True,
            byte_fallback=proto.trainer_spec.byte_fallback,
        )
    )
    spec = proto.normalizer_spec
    steps = [normalizers.Precompiled(spec.precompiled_charsmap)] if spec.precompiled_charsmap else []
    if spec.remove_extra_whitespaces:
        steps += [normalizers.Strip(left=True, right=True), normalizers.Replace(Regex(" {2,}"), " ")]
    tokenizer.normalizer = normalizers.Sequence(steps)
    prepend = "always" if spec.add_dummy_prefix else "never"
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=WORD_START, prepend_scheme=prepend, split=False)
    tokenizer.decoder = decoders.Sequence(
        [
            decoders.Replace(WORD_START, " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1 if spec.add_dummy_prefix else 0, 0),
        ]
    )
    special = sentencepiece_model_pb2.ModelProto.SentencePiece
    tokenizer.add_tokens(
        [
            AddedToken(p.piece, special=p.type == special.CONTROL, normalized=False)
            for p in proto.pieces
            if p.type in (special.CONTROL, special.USER_DEFINED)
        ]
    )
    tokenizer.add_special_tokens([AddedToken(unk, special=True, normalized=False)])
    return tokenizer


def convert_nemo(path: str | os.PathLike, output: str | os.PathLike) -> Parakeet:
    """Convert a `.nemo` file into a Hugging Face-layout directory; returns the loaded model."""
    path = Path(path)
    config, state, tokenizer_model = read_nemo(path)
    try:
        network_config = model_config(config, state)
        features = feature_config(config.get("preprocessor") or {})
    except (KeyError, TypeError) as err:
        raise NemoError(f"{path}: model_config.yaml lacks what a Parakeet model needs ({err!r})") from None
    network = build_network(network_config)
    renamed = {rename(name): tensor for name, tensor in state.items() if not DROPPED.match(name)}
    check_and_load(network, renamed, str(path))
    pieces = sentencepiece_to_tokenizers(tokenizer_model)
    # The blank is the id after the pieces; CTC names it <pad> (transformers' convention) unless a piece is.
    transducer = isinstance(network_config, RNNTConfig)
    blank = "<blank>" if transducer or pieces.token_to_id("<pad>") is not None else "<pad>"
    pieces.add_special_tokens([AddedToken(blank, special=True, normalized=False)])
    tokenizer = Tokenizer(pieces, network_config.blank_id)
    model = Parakeet(network_config, features, network, tokenizer)
    model.save_pretrained(output)
    return model
