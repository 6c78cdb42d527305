"""`parakeet convert x.nemo OUT`: .nemo files built here in NeMo's layout (random weights of the reference
checkpoints, renamed to NeMo's module names; a SentencePiece BPE tokenizer) convert to the same model."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cli.main import main
from model import load_model
from model.checkpoint import read_state_dict
from model.decoding import greedy_spans
from model.features import pad_waveforms
from recipe.sentences import sentence_pool
from tests.reference import ReferenceCheckpoint

sentencepiece = pytest.importorskip("sentencepiece", reason="the nemo extra (sentencepiece) reads .nemo tokenizers")

# Our (transformers') weight names -> NeMo's, as NeMo's ConformerEncoder, ConvASRDecoder, RNNTDecoder and RNNTJoint
# name them.
NEMO_NAMES = [
    (r"^encoder\.subsampling\.layers\.", "encoder.pre_encode.conv."),
    (r"^encoder\.subsampling\.linear\.", "encoder.pre_encode.out."),
    (r"\.conv\.norm\.", ".conv.batch_norm."),
    (r"\.self_attn\.([qkv])_proj\.", r".self_attn.linear_\1."),
    (r"\.self_attn\.o_proj\.", ".self_attn.linear_out."),
    (r"\.self_attn\.relative_k_proj\.", ".self_attn.linear_pos."),
    (r"\.self_attn\.bias_([uv])$", r".self_attn.pos_bias_\1"),
    (r"^ctc_head\.", "decoder.decoder_layers.0."),
    (r"^decoder\.embedding\.", "decoder.prediction.embed."),
    (r"^decoder\.lstm\.", "decoder.prediction.dec_rnn.lstm."),
    (r"^decoder\.decoder_projector\.", "joint.pred."),
    (r"^encoder_projector\.", "joint.enc."),
    (r"^joint\.head\.", "joint.joint_net.2."),
]
TOKENIZER_FILE = "3f2a9c_tokenizer.model"  # NeMo prefixes artifacts with a hash


TRAINING_ONLY = {
    "dropout",
    "dropout_positions",
    "layerdrop",
    "activation_dropout",
    "attention_dropout",
    "initializer_range",
}


def inference_settings(config) -> dict:
    values = config.to_dict()
    values["encoder_config"] = {k: v for k, v in values["encoder_config"].items() if k not in TRAINING_ONLY}
    return values


def nemo_name(name: str) -> str:
    for pattern, replacement in NEMO_NAMES:
        name = re.sub(pattern, replacement, name)
    return name


def train_sentencepiece(pieces: int) -> bytes:
    """A SentencePiece BPE as NeMo trains them (unk at 0, no bos/eos)."""
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentence_pool(4000, seed=1)),
        model_writer=model,
        model_type="bpe",
        vocab_size=pieces,
        character_coverage=1.0,
        bos_id=-1,
        eos_id=-1,
        minloglevel=2,
    )
    return model.getvalue()


def nemo_config(config, tokenizer: sentencepiece.SentencePieceProcessor) -> dict:
    """model_config.yaml as NeMo writes it for a FastConformer CTC / RNN-T / TDT model (the keys the importer reads,
    and some of those it must ignore)."""
    encoder = config.encoder_config
    labels = [tokenizer.id_to_piece(i) for i in range(tokenizer.get_piece_size())]
    values = {
        "sample_rate": 16000,
        "tokenizer": {"dir": None, "type": "bpe", "model": f"nemo:{TOKENIZER_FILE}"},
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "sample_rate": 16000,
            "normalize": "per_feature",
            "window_size": 0.025,
            "window_stride": 0.01,
            "window": "hann",
            "features": encoder.num_mel_bins,
            "n_fft": 512,
            "log": True,
            "frame_splicing": 1,
            "dither": 1e-05,
            "pad_to": 0,
            "pad_value": 0.0,
        },
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConformerEncoder",
            "feat_in": encoder.num_mel_bins,
            "feat_out": -1,
            "n_layers": encoder.num_hidden_layers,
            "d_model": encoder.hidden_size,
            "subsampling": "dw_striding",
            "subsampling_factor": 8,
            "subsampling_conv_channels": encoder.subsampling_conv_channels,
            "ff_expansion_factor": encoder.intermediate_size // encoder.hidden_size,
            "self_attention_model": "rel_pos",
            "n_heads": encoder.num_attention_heads,
            "att_context_size": [-1, -1],
            "xscaling": True,
            "untie_biases": True,
            "pos_emb_max_len": 5000,
            "conv_kernel_size": encoder.conv_kernel_size,
            "conv_norm_type": "batch_norm",
            "dropout": 0.1,
            "dropout_pre_encoder": 0.1,
            "dropout_emb": 0.0,
            "dropout_att": 0.1,
        },
    }
    if not hasattr(config, "decoder_hidden_size"):
        values["decoder"] = {
            "_target_": "nemo.collections.asr.modules.ConvASRDecoder",
            "feat_in": encoder.hidden_size,
            "num_classes": len(labels),
            "vocabulary": labels,
        }
        return values
    hidden = config.decoder_hidden_size
    durations = list(getattr(config, "durations", []))
    values.update(
        labels=labels,
        model_defaults={
            "enc_hidden": encoder.hidden_size,
            "pred_hidden": hidden,
            "joint_hidden": hidden,
            **({"tdt_durations": durations} if durations else {}),
        },
        decoder={
            "_target_": "nemo.collections.asr.modules.RNNTDecoder",
            "blank_as_pad": True,
            "vocab_size": len(labels),
            "prednet": {"pred_hidden": hidden, "pred_rnn_layers": config.num_decoder_layers, "dropout": 0.2},
        },
        joint={
            "_target_": "nemo.collections.asr.modules.RNNTJoint",
            "num_classes": len(labels),
            "num_extra_outputs": len(durations),
            "vocabulary": labels,
            "jointnet": {
                "joint_hidden": hidden,
                "activation": "relu",
                "dropout": 0.2,
                "encoder_hidden": encoder.hidden_size,
                "pred_hidden": hidden,
            },
        },
        decoding={
            "strategy": "greedy_batch",
            "greedy": {"max_symbols": config.max_symbols_per_step},
            **({"model_type": "tdt", "durations": durations} if durations else {}),
        },
    )
    return values


def build_nemo(checkpoint: ReferenceCheckpoint, path: Path) -> sentencepiece.SentencePieceProcessor:
    """The reference checkpoint's weights and a fresh SentencePiece tokenizer of the same size, as a .nemo tar."""
    direct = load_model(checkpoint.directory)
    tokenizer_model = train_sentencepiece(direct.config.vocab_size - 1)
    tokenizer = sentencepiece.SentencePieceProcessor(model_proto=tokenizer_model)
    state = {nemo_name(name): tensor for name, tensor in read_state_dict(checkpoint.directory).items()}
    state["preprocessor.featurizer.window"] = torch.hann_window(400)
    state["preprocessor.featurizer.fb"] = torch.rand(1, direct.config.encoder_config.num_mel_bins, 257)
    weights = io.BytesIO()
    torch.save(state, weights)
    files = {
        "model_config.yaml": yaml.safe_dump(nemo_config(direct.config, tokenizer)).encode(),
        "model_weights.ckpt": weights.getvalue(),
        TOKENIZER_FILE: tokenizer_model,
    }
    with tarfile.open(path, "w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return tokenizer


@pytest.mark.parametrize("kind", ["ctc", "tdt", "rnnt"])
def test_converted_nemo_equals_the_same_weights_loaded_directly(
    kind: str, small_checkpoint, small_tdt_checkpoint, small_rnnt_checkpoint, speechlike: list[np.ndarray], tmp_path
) -> None:
    checkpoint = {"ctc": small_checkpoint, "tdt": small_tdt_checkpoint, "rnnt": small_rnnt_checkpoint}[kind]
    tokenizer = build_nemo(checkpoint, tmp_path / "model.nemo")
    assert main(["convert", str(tmp_path / "model.nemo"), str(tmp_path / "out")]) == 0

    converted, direct = load_model(tmp_path / "out"), load_model(checkpoint.directory)
    assert inference_settings(converted.config) == inference_settings(direct.config)
    assert converted.feature_config == direct.feature_config
    converted_state, direct_state = converted.network.state_dict(), direct.network.state_dict()
    assert converted_state.keys() == direct_state.keys()
    assert all(torch.equal(converted_state[name], direct_state[name]) for name in direct_state)

    with torch.inference_mode():
        output, lengths = direct.network(*direct.features(*pad_waveforms(speechlike)))
        spans = greedy_spans(direct.network, output, lengths)
    assert any(spans)
    assert [t.text for t in converted.transcribe(speechlike)] == [
        tokenizer.decode([s.token_id for s in row]) for row in spans
    ]
    for text in sentence_pool(50, seed=7):  # the converted tokenizer.json tokenizes as SentencePiece does
        ids = tokenizer.encode(text)
        assert converted.tokenizer.encode(text) == ids and converted.tokenizer.decode(ids) == tokenizer.decode(ids)
    blank = "<blank>" if kind != "ctc" else "<pad>"
    assert converted.tokenizer.piece(converted.config.blank_id) == blank


def test_bad_nemo_files_are_named(tmp_path, capsys) -> None:
    (tmp_path / "text.nemo").write_text("not a tar")
    assert main(["convert", str(tmp_path / "text.nemo"), str(tmp_path / "out")]) == 2
    assert f"{tmp_path / 'text.nemo'}: not a readable .nemo (tar) file" in capsys.readouterr().err
    with tarfile.open(tmp_path / "no-weights.nemo", "w") as archive:
        archive.addfile(tarfile.TarInfo("./model_config.yaml"), io.BytesIO(b""))
    assert main(["convert", str(tmp_path / "no-weights.nemo"), str(tmp_path / "out")]) == 2
    assert (
        "no-weights.nemo: no model_weights.ckpt in the archive (it holds model_config.yaml)" in capsys.readouterr().err
    )
