"""Our RNN-T and TDT against transformers' ParakeetForRNNT / ParakeetForTDT on the same random weights and files:
projected encoder output, joint logits, and greedy decoding (ids, frames, durations) batched and single."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from model import load_model
from model.decoding import Emission, greedy_transducer
from model.encoder import length_mask
from model.features import pad_waveforms
from tests.reference import (
    REAL_DECODER,
    REAL_TDT_ENCODER,
    SMALL_DECODER,
    SMALL_ENCODER,
    ReferenceCheckpoint,
    make_transducer_checkpoint,
    relative_error,
)

RELATIVE_TOLERANCE = 1e-4  # max abs difference / max abs value of the reference tensor


def reference_emissions(checkpoint: ReferenceCheckpoint, inputs, lengths: torch.Tensor) -> list[list[Emission]]:
    """transformers' generate(): each row's steps while its frame pointer is inside its encoder output, blanks
    dropped (later steps of a finished row are padding)."""
    output = checkpoint.model.generate(inputs.input_features, attention_mask=inputs.attention_mask)
    blank = checkpoint.model.config.blank_token_id
    rows = []
    for tokens, durations, length in zip(output.sequences[:, 1:].tolist(), output.durations[:, 1:].tolist(), lengths):
        frame, emissions = 0, []
        for token, duration in zip(tokens, durations):
            if frame >= length:
                break
            if token != blank:
                emissions.append(Emission(token, frame, duration))
            frame += duration
        rows.append(emissions)
    return rows


def decode_both(checkpoint: ReferenceCheckpoint, clips: list[np.ndarray]) -> tuple[list[list[Emission]], ...]:
    """(ours, the reference's) emissions, after checking the encoder output and the joint's logits."""
    from transformers import ParakeetFeatureExtractor

    model = load_model(checkpoint.directory)
    reference = checkpoint.model
    inputs = ParakeetFeatureExtractor.from_pretrained(checkpoint.directory)(
        clips, sampling_rate=16000, return_tensors="pt"
    )
    with torch.inference_mode():
        encoded, lengths = model.network(*model.features(*pad_waveforms(clips)))
        reference_encoded = reference.get_audio_features(
            inputs.input_features, inputs.attention_mask, output_attention_mask=True
        )
        valid = length_mask(lengths, encoded.shape[1])
        assert torch.equal(valid, reference_encoded.attention_mask.bool())
        assert relative_error(encoded, reference_encoded.pooler_output, valid) <= RELATIVE_TOLERANCE

        # The joint over every frame, after the start (blank) and after a random previous token.
        previous = torch.randint(0, model.config.vocab_size, (len(clips),), generator=torch.Generator().manual_seed(0))
        for tokens in (torch.full_like(previous, model.config.blank_id), previous):
            predicted, _ = model.network.decoder(tokens, model.network.decoder.initial_state(len(clips)))
            logits = model.network.joint(encoded, predicted[:, None])
            reference_logits = reference(
                inputs.input_features, inputs.attention_mask, decoder_input_ids=tokens[:, None]
            ).logits
            assert relative_error(logits, reference_logits, valid) <= RELATIVE_TOLERANCE

        ours = greedy_transducer(model.network, encoded, lengths)
    return ours, reference_emissions(checkpoint, inputs, lengths.tolist())


def assert_parity(checkpoint: ReferenceCheckpoint, clips: list[np.ndarray]) -> list[list[Emission]]:
    ours, reference = decode_both(checkpoint, clips)
    assert ours == reference
    texts = [transcript.text for transcript in load_model(checkpoint.directory).transcribe(clips)]
    assert texts == checkpoint.tokenizer.batch_decode(
        [[e.token_id for e in row] for row in ours], skip_special_tokens=True, group_tokens=False
    )
    return ours


@pytest.mark.parametrize("kind", ["tdt", "rnnt"])
def test_small_model_batched_and_single(
    kind: str,
    small_tdt_checkpoint: ReferenceCheckpoint,
    small_rnnt_checkpoint: ReferenceCheckpoint,
    speechlike: list[np.ndarray],
) -> None:
    checkpoint = small_tdt_checkpoint if kind == "tdt" else small_rnnt_checkpoint
    batched = assert_parity(checkpoint, speechlike)
    assert [assert_parity(checkpoint, [clip])[0] for clip in speechlike] == batched
    # The random weights exercise every rule: blanks between tokens, several tokens at one frame, and for TDT
    # every duration, for RNN-T the forced move after max_symbols_per_step tokens.
    emissions = [e for row in batched for e in row]
    assert len(emissions) > 10 and max(Counter((e.frame, row) for row, r in enumerate(batched) for e in r).values()) > 1
    durations = Counter(e.duration for e in emissions)
    if kind == "tdt":
        assert set(durations) == set(checkpoint.model.config.durations)
    else:
        assert set(durations) == {0, 1}  # 1: moved on by max_symbols_per_step (3)


def test_tdt_moves_on_after_max_symbols_per_step(tmp_path, speechlike: list[np.ndarray]) -> None:
    """transformers' TDT never forces a move (NeMo's does), so with a joint that keeps a token on its frame the two
    agree up to the max_symbols_per_step-th emission at one frame, which moves ours on by one frame."""
    checkpoint = make_transducer_checkpoint(
        tmp_path, "tdt", SMALL_ENCODER, SMALL_DECODER, vocab_size=257, zero_duration_bias=0.0
    )
    limit = checkpoint.model.config.max_symbols_per_step
    ours, reference = decode_both(checkpoint, speechlike)
    limited = 0
    for row, reference_row in zip(ours, reference):
        per_frame = Counter(e.frame for e in row)
        assert max(per_frame.values(), default=0) <= limit
        if max(per_frame.values(), default=0) < limit:
            assert row == reference_row
            continue
        limited += 1
        last = max(i for i, e in enumerate(row) if e.frame == min(f for f, n in per_frame.items() if n == limit))
        assert row[:last] == reference_row[:last]
        expected = reference_row[last]
        assert row[last] == Emission(expected.token_id, expected.frame, max(expected.duration, 1))
    assert limited


# Prediction networks and joints that released checkpoints vary, or may, over the small encoder. transformers'
# generate() advances a TDT by the index of the best duration logit, the same as its value only for durations
# 0..n-1 (every released checkpoint's); other lists are test_tdt_durations_are_values below.
DECODER_VARIANTS = {
    "tdt, durations 0-1-2, one LSTM layer": ("tdt", dict(durations=[0, 1, 2], num_decoder_layers=1)),
    "tdt, three LSTM layers of 32": ("tdt", dict(num_decoder_layers=3, decoder_hidden_size=32)),
    "rnnt, tanh joint, one LSTM layer": ("rnnt", dict(hidden_act="tanh", num_decoder_layers=1)),
}


@pytest.mark.parametrize(("kind", "decoder"), DECODER_VARIANTS.values(), ids=DECODER_VARIANTS.keys())
def test_other_decoder_shapes_parity(tmp_path, speechlike: list[np.ndarray], kind: str, decoder: dict) -> None:
    checkpoint = make_transducer_checkpoint(tmp_path, kind, SMALL_ENCODER, {**SMALL_DECODER, **decoder}, 129)
    batched = assert_parity(checkpoint, speechlike)
    assert [assert_parity(checkpoint, [clip])[0] for clip in speechlike] == batched
    assert sum(map(len, batched)) > 10  # the random joint emits tokens, so the comparison covers decoding


def test_tdt_durations_are_values(tmp_path, speechlike: list[np.ndarray]) -> None:
    """With durations 0-1-2-4-8 a step moves on by the value of its best duration logit, as NeMo's TDT does: each
    emission's duration is one of the list's, 4 and 8 among them, and the next emission comes no earlier."""
    durations = [0, 1, 2, 4, 8]
    checkpoint = make_transducer_checkpoint(
        tmp_path, "tdt", SMALL_ENCODER, {**SMALL_DECODER, "durations": durations}, 129
    )
    ours, _ = decode_both(checkpoint, speechlike)
    emissions = [e for row in ours for e in row]
    assert {e.duration for e in emissions} <= set(durations) and {4, 8} & {e.duration for e in emissions}
    for row in ours:
        assert all(later.frame >= e.frame + e.duration for e, later in zip(row, row[1:]))


@pytest.mark.slow
def test_real_size_tdt_parity(tmp_path, speechlike: list[np.ndarray]) -> None:
    """The parakeet-tdt-0.6b-v2 shape: 24 layers, hidden 1024, 128 mels, LSTM 2x640, vocab 1025, durations 0-4.
    About 4 minutes on 2 busy cores: building, saving and loading 0.6 B parameters twice dominates."""
    checkpoint = make_transducer_checkpoint(
        tmp_path, "tdt", REAL_TDT_ENCODER, REAL_DECODER, vocab_size=1025, blank_bias=0.0
    )
    batched = assert_parity(checkpoint, speechlike[:2])
    assert assert_parity(checkpoint, [speechlike[1]]) == batched[1:]
    emissions = [e for row in batched for e in row]
    assert len(emissions) > 5 and len({e.duration for e in emissions}) > 1


def test_save_pretrained_round_trip_and_word_times(
    small_tdt_checkpoint: ReferenceCheckpoint, tmp_path, speechlike: list[np.ndarray]
) -> None:
    """Our saved TDT loads here and in transformers, whose generate() then decodes as we do; words are timed by
    the frames their tokens cover."""
    from transformers import ParakeetForTDT

    model = load_model(small_tdt_checkpoint.directory)
    model.save_pretrained(tmp_path)
    assert load_model(tmp_path).transcribe(speechlike) == model.transcribe(speechlike)
    reloaded = ParakeetForTDT.from_pretrained(tmp_path).eval()
    ours, reference = decode_both(ReferenceCheckpoint(tmp_path, reloaded, small_tdt_checkpoint.tokenizer), speechlike)
    assert ours == reference

    transcript = model.transcribe(speechlike[1])[0]
    assert transcript.words and all(w.start < w.end for w in transcript.words)
    assert [w.start for w in transcript.words] == sorted(w.start for w in transcript.words)
    assert transcript.words[-1].end <= transcript.duration + model.timing.seconds * max(model.config.durations)
