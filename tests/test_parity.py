"""Our model against transformers' ParakeetForCTC on the same random weights, loaded from the same files."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from model import ParakeetCTC, load_model
from model.encoder import length_mask
from model.features import pad_waveforms
from tests.reference import REAL_ENCODER, SMALL_ENCODER, ReferenceCheckpoint, make_reference_checkpoint, relative_error

FEATURE_TOLERANCE = 1e-4  # max abs difference
RELATIVE_TOLERANCE = 1e-4  # max abs difference / max abs value of the reference tensor


def assert_parity(checkpoint: ReferenceCheckpoint, clips: list[np.ndarray]) -> None:
    from transformers import ParakeetFeatureExtractor

    model = load_model(checkpoint.directory)
    reference = checkpoint.model
    inputs = ParakeetFeatureExtractor.from_pretrained(checkpoint.directory)(
        clips, sampling_rate=16000, return_tensors="pt"
    )
    with torch.inference_mode():
        features, frame_lengths = model.features(*pad_waveforms(clips))
        assert torch.equal(frame_lengths, inputs.attention_mask.sum(-1))
        assert (features - inputs.input_features).abs().max() <= FEATURE_TOLERANCE

        hidden, lengths = model.network.encoder(features, frame_lengths)
        reference_encoder = reference.encoder(inputs.input_features, inputs.attention_mask)
        valid = length_mask(lengths, hidden.shape[1])
        assert torch.equal(valid, reference_encoder.attention_mask.bool())
        assert relative_error(hidden, reference_encoder.last_hidden_state, valid) <= RELATIVE_TOLERANCE

        logits = model.network.ctc_head(hidden)
        reference_logits = reference(inputs.input_features, inputs.attention_mask).logits
        assert relative_error(logits, reference_logits, valid) <= RELATIVE_TOLERANCE

        reference_ids = reference.generate(inputs.input_features, inputs.attention_mask)
        ids = logits.argmax(-1).masked_fill(~valid, model.config.blank_id)
        assert torch.equal(ids, reference_ids)

    texts = [transcript.text for transcript in model.transcribe(clips)]
    assert texts == checkpoint.tokenizer.batch_decode(reference_ids, skip_special_tokens=True)


def test_small_model_single_inputs(small_checkpoint: ReferenceCheckpoint, speechlike: list[np.ndarray]) -> None:
    for clip in speechlike:
        assert_parity(small_checkpoint, [clip])


def test_small_model_padded_batch(small_checkpoint: ReferenceCheckpoint, speechlike: list[np.ndarray]) -> None:
    assert_parity(small_checkpoint, speechlike)


def test_one_waveforms_features_are_a_batch_of_its_own_bit_for_bit(
    small_checkpoint: ReferenceCheckpoint, speechlike: list[np.ndarray]
) -> None:
    """The runners' path (LogMelFeatures.one, no padding masks) gives forward's bits, whatever the length."""
    features = load_model(small_checkpoint.directory).features
    rng = np.random.default_rng(3)
    lengths = [320, 321, 479, 16000, 16161, 80_000, int(rng.integers(400, 200_000))]
    clips = speechlike + [(0.1 * rng.standard_normal(length)).astype(np.float32) for length in lengths]
    for clip in clips:
        batched, (frames,) = features(*pad_waveforms([clip]))
        one = features.one(torch.from_numpy(clip))
        assert one.shape == (frames, batched.shape[2])
        assert torch.equal(one, batched[0, :frames])


def test_batched_equals_single(small_checkpoint: ReferenceCheckpoint, speechlike: list[np.ndarray]) -> None:
    model = load_model(small_checkpoint.directory)
    with torch.inference_mode():
        batch_logits, lengths = model.network(*model.features(*pad_waveforms(speechlike)))
        for row, clip in enumerate(speechlike):
            single, (length,) = model.network(*model.features(*pad_waveforms([clip])))
            assert length == lengths[row]
            torch.testing.assert_close(batch_logits[row, :length], single[0, :length], rtol=0, atol=1e-5)


def test_loss_matches_reference_and_trains(small_checkpoint: ReferenceCheckpoint, speechlike: list[np.ndarray]) -> None:
    from transformers import ParakeetFeatureExtractor

    model = load_model(small_checkpoint.directory)
    texts = ["the cat sat", "one two three four", "hello"]
    targets = [model.tokenizer.encode(text) for text in texts]
    padded = torch.full((len(targets), max(map(len, targets))), model.config.blank_id)
    for row, ids in enumerate(targets):
        padded[row, : len(ids)] = torch.tensor(ids)
    target_lengths = torch.tensor([len(ids) for ids in targets])

    inputs = ParakeetFeatureExtractor.from_pretrained(small_checkpoint.directory)(
        speechlike, sampling_rate=16000, return_tensors="pt"
    )
    with torch.no_grad():
        reference_loss = small_checkpoint.model(inputs.input_features, inputs.attention_mask, labels=padded).loss
    features, frame_lengths = model.features(*pad_waveforms(speechlike))
    loss = model.network.loss(features, frame_lengths, padded, target_lengths)
    torch.testing.assert_close(loss, reference_loss, rtol=1e-5, atol=1e-5)

    # Dropout stays on; layer drop goes off so that every parameter is reached by this one step.
    config = replace(model.config, encoder_config=replace(model.config.encoder_config, layerdrop=0.0))
    network = ParakeetCTC(config).train()
    network.load_state_dict(model.network.state_dict())
    network.loss(features, frame_lengths, padded, target_lengths).backward()
    for name, parameter in network.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


# The encoder options of transformers' ParakeetEncoderConfig that released checkpoints vary, or may.
SHAPE_VARIANTS = {
    "no biases": dict(attention_bias=False, convolution_bias=False),
    "subsampling 4x": dict(subsampling_factor=4),
    "subsampling 16x, kernel 5": dict(subsampling_factor=16, subsampling_conv_kernel_size=5),
    "unscaled input": dict(scale_input=False),
    "gelu, conv kernel 31": dict(hidden_act="gelu", conv_kernel_size=31),
    "128 mels": dict(num_mel_bins=128),
    "grouped keys and values": dict(num_key_value_heads=2),
    "one head, three layers": dict(num_attention_heads=1, num_hidden_layers=3),
}


@pytest.mark.parametrize("overrides", SHAPE_VARIANTS.values(), ids=SHAPE_VARIANTS.keys())
def test_other_shapes_parity(tmp_path, speechlike: list[np.ndarray], overrides: dict) -> None:
    checkpoint = make_reference_checkpoint(tmp_path, SMALL_ENCODER, vocab_size=129, **overrides)
    assert_parity(checkpoint, speechlike)
    assert_parity(checkpoint, [speechlike[0]])


@pytest.mark.slow
def test_real_size_parity(tmp_path, speechlike: list[np.ndarray]) -> None:
    """The parakeet-ctc-0.6b shape: 24 layers, hidden 1024, 8 heads, 80 mels, vocab 1025."""
    checkpoint = make_reference_checkpoint(tmp_path, REAL_ENCODER, vocab_size=1025)
    assert_parity(checkpoint, speechlike[:2])
    assert_parity(checkpoint, [speechlike[2]])


def test_tokenizer_decodes_like_transformers(tmp_path) -> None:
    """A 1024-piece SentencePiece-style BPE (+ blank), decoded from raw CTC frame ids with repeats and blanks."""
    from transformers import ParakeetTokenizer

    from model.decoding import greedy_ctc
    from model.tokenizer import Tokenizer
    from recipe.sentences import sentence_pool
    from recipe.vocabulary import train_tokenizer

    trained = train_tokenizer(sentence_pool(4000, seed=5), vocab_size=1025)
    trained.save(str(tmp_path / "tokenizer.json"))
    ours = Tokenizer.from_file(tmp_path / "tokenizer.json", blank_id=1024)
    reference = ParakeetTokenizer(
        tokenizer_object=trained, pad_token="<pad>", unk_token="<unk>", clean_up_tokenization_spaces=False
    )
    assert ours.vocab_size == 1025 and ours.piece(1024) == "<pad>" and ours.piece(0) == "<unk>"

    generator = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 1025, (64, 80), generator=generator)
    frames[torch.rand(frames.shape, generator=generator) < 0.4] = 1024  # plenty of blanks
    frames[:, 1::3] = frames[:, ::3][:, : frames[:, 1::3].shape[1]]  # and repeats
    logits = torch.nn.functional.one_hot(frames, 1025).float()
    spans = greedy_ctc(logits, torch.full((64,), 80), blank_id=1024)
    ours_text = [ours.decode([s.token_id for s in row]) for row in spans]
    assert ours_text == reference.batch_decode(frames, skip_special_tokens=True)
    for text in sentence_pool(50, seed=6):  # repeats must survive outside CTC collapsing ("four four two")
        assert ours.decode(ours.encode(text)) == text == reference.decode(reference.encode(text), group_tokens=False)
