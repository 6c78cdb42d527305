"""load_model / transcribe: inputs of every kind, checkpoint layouts, and clear errors on bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from safetensors.torch import load_file, save_file

from model import AudioError, CheckpointError, ConfigError, load_model
from model.audio import UnsupportedFormatError, load_audio
from model.features import pad_waveforms
from model.stages import Buckets
from tests.reference import SHARED_AUDIO, SMALL_ENCODER, ReferenceCheckpoint, make_reference_checkpoint


@pytest.fixture(scope="module")
def model(small_checkpoint: ReferenceCheckpoint):
    return load_model(small_checkpoint.directory)


def copy_checkpoint(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_inputs_of_every_kind_agree(model, speechlike, tmp_path: Path) -> None:
    clip = speechlike[0]
    wav = tmp_path / "clip.wav"
    soundfile.write(wav, clip, 16000, subtype="FLOAT")
    expected = model.transcribe(clip)[0]
    assert model.transcribe(str(wav))[0] == expected
    assert model.transcribe(wav.read_bytes())[0] == expected
    assert model.transcribe([wav])[0] == expected
    assert expected.duration == pytest.approx(len(clip) / 16000)


def test_batching_and_order_do_not_change_results(model, small_checkpoint, speechlike) -> None:
    singles = [model.transcribe(clip)[0] for clip in speechlike]
    for batch_size in (2, 3):
        batched = load_model(small_checkpoint.directory, buckets=Buckets((batch_size,)))
        assert batched.transcribe(speechlike) == singles
        assert batched.transcribe(speechlike[::-1]) == singles[::-1]


def test_words_lie_inside_the_audio_and_join_to_the_text(model, speechlike) -> None:
    for transcript in model.transcribe(speechlike):
        assert " ".join(word.word for word in transcript.words) == transcript.text
        for word in transcript.words:
            assert 0 <= word.start < word.end <= transcript.duration + model.timing.seconds


def test_stereo_44k_recording_is_downmixed_and_resampled() -> None:
    audio = load_audio(SHARED_AUDIO / "jfk.flac")
    raw, rate = soundfile.read(SHARED_AUDIO / "jfk.flac")
    assert raw.ndim == 2 and rate == 44100
    assert audio.ndim == 1 and audio.dtype == np.float32
    assert len(audio) == pytest.approx(len(raw) * 16000 / 44100, abs=2)
    # A 1 kHz tone keeps its frequency through resampling.
    tone = np.sin(2 * np.pi * 1000 * np.arange(44100) / 44100).astype(np.float32)
    spectrum = np.abs(np.fft.rfft(load_audio(tone, sample_rate=44100)))
    assert np.argmax(spectrum) == pytest.approx(1000, abs=1)  # 1 Hz bins over one second


def test_sample_rate_of_arrays_is_honoured(model) -> None:
    tone = np.sin(2 * np.pi * 440 * np.arange(8000) / 8000).astype(np.float32)
    assert model.transcribe(tone, sample_rate=8000)[0].duration == 1.0


@pytest.mark.parametrize(
    ("audio", "message"),
    [
        (np.array([0.1, np.nan] * 800, dtype=np.float32), "input 0: audio contains NaN or infinite samples"),
        (np.array([0.1, np.inf] * 800, dtype=np.float32), "NaN or infinite"),
        (np.zeros(1600, dtype=np.int16), "integer samples (int16) are ambiguous"),
        (np.zeros((10, 2, 2), dtype=np.float32), "audio must be 1-D"),
        (np.array(["a"] * 400), "must be a float or integer array"),
    ],
)
def test_bad_arrays_are_named_and_explained(model, audio, message) -> None:
    with pytest.raises(AudioError) as error:
        model.transcribe([audio])
    assert message in str(error.value)


def test_bad_files_are_named(model, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(AudioError, match=r"garbage\.wav: cannot decode audio"):
        model.transcribe(garbage)
    with pytest.raises(AudioError, match=r"missing\.wav: no such audio file"):
        model.transcribe(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="input 0: cannot decode audio: Error in WAV file"):
        model.transcribe(b"RIFF....WAVEfmt ")
    m4a = tmp_path / "voice.m4a"
    m4a.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(64))
    with pytest.raises(UnsupportedFormatError, match=r"voice\.m4a: MP4/M4A/AAC audio is not supported"):
        model.transcribe(m4a)
    with pytest.raises(UnsupportedFormatError, match="WebM"):
        model.transcribe(b"\x1aE\xdf\xa3" + bytes(64))


def test_windows_must_fit_the_position_table(tmp_path: Path, speechlike) -> None:
    """A model whose position table holds 25 encoder frames (2 s) refuses windows longer than that, and with
    windows that fit transcribes audio of any length."""
    checkpoint = make_reference_checkpoint(tmp_path, SMALL_ENCODER, vocab_size=257, max_position_embeddings=25)
    with pytest.raises(
        ConfigError,
        match=r"largest window \(3000 feature frames\) gives 375 encoder frames.*holds 25 "
        r"\(about 2 s\): choose frame_counts of at most 200",
    ):
        load_model(checkpoint.directory)
    model = load_model(checkpoint.directory, buckets=Buckets((1, 4), (200,)), context_seconds=0.32)
    audio = np.concatenate(speechlike)
    assert model.transcribe(audio)[0].duration == pytest.approx(len(audio) / 16000)


@pytest.mark.parametrize(
    "audio",
    [np.zeros(0, np.float32), np.zeros(100, np.float32), np.zeros(16000, np.float32), np.full(16000, 5e-5, np.float32)],
)
def test_empty_short_and_silent_audio_give_empty_transcripts(model, audio) -> None:
    """As in the Serve app and the batch job: nothing to hear is "" (the model would invent words from silence)."""
    [transcript] = model.transcribe(audio)
    assert (transcript.text, transcript.words, transcript.duration) == ("", [], len(audio) / 16000)


def test_sharded_checkpoint_loads_identically(small_checkpoint, speechlike, tmp_path: Path) -> None:
    small_checkpoint.model.save_pretrained(tmp_path, max_shard_size="100KB")
    for name in ("tokenizer.json", "processor_config.json"):
        shutil.copy(small_checkpoint.directory / name, tmp_path / name)
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    assert load_model(tmp_path).transcribe(speechlike) == load_model(small_checkpoint.directory).transcribe(speechlike)


def test_save_pretrained_round_trips_and_loads_in_transformers(model, speechlike, tmp_path: Path) -> None:
    from transformers import ParakeetForCTC

    model.save_pretrained(tmp_path)
    assert load_model(tmp_path).transcribe(speechlike) == model.transcribe(speechlike)
    ParakeetForCTC.from_pretrained(tmp_path)  # every tensor name and the config are accepted by the reference


def test_missing_unexpected_and_misshaped_tensors_are_named(small_checkpoint, tmp_path: Path) -> None:
    directory = copy_checkpoint(small_checkpoint.directory, tmp_path / "ckpt")
    weights = load_file(directory / "model.safetensors")
    weights.pop("encoder.layers.1.self_attn.bias_u")
    weights["encoder.extra.weight"] = weights["ctc_head.bias"]
    weights["ctc_head.bias"] = weights["ctc_head.bias"][:-1].clone()
    save_file(weights, directory / "model.safetensors")
    with pytest.raises(CheckpointError) as error:
        load_model(directory)
    message = str(error.value)
    assert "missing tensors: encoder.layers.1.self_attn.bias_u" in message
    assert "unexpected tensors: encoder.extra.weight" in message
    assert "ctc_head.bias (256,) != expected (257,)" in message


def test_incomplete_or_foreign_checkpoints(small_checkpoint, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        load_model(tmp_path / "nowhere" / "model")
    directory = copy_checkpoint(small_checkpoint.directory, tmp_path / "ckpt")
    (directory / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="neither model.safetensors nor model.safetensors.index.json"):
        load_model(directory)
    (directory / "processor_config.json").unlink()
    with pytest.raises(CheckpointError, match="no preprocessor_config.json"):
        load_model(directory)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "model_type": "wav2vec2"}))
    with pytest.raises(ConfigError, match="model_type 'wav2vec2' is not supported; expected one of parakeet_ctc, "):
        load_model(directory)
    (directory / "config.json").write_text(json.dumps({**config, "model_type": "parakeet_tdt"}))
    with pytest.raises(ConfigError, match="blank_token_id 8192 is outside vocab_size 257"):
        load_model(directory)


def test_hub_repo_ids_are_downloaded_first(small_checkpoint, monkeypatch) -> None:
    import huggingface_hub

    calls = []

    def fake_download(repo_id: str, allow_patterns: list[str]) -> str:
        calls.append((repo_id, allow_patterns))
        return str(small_checkpoint.directory)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    model = load_model("nvidia/parakeet-ctc-0.6b")
    assert model.config.vocab_size == 257
    assert calls[0][0] == "nvidia/parakeet-ctc-0.6b" and "*.safetensors" in calls[0][1]


def test_int8_quantisation_stays_close_to_float32(small_checkpoint, speechlike) -> None:
    exact = load_model(small_checkpoint.directory)
    quantized = load_model(small_checkpoint.directory, quantize="int8")
    assert not any(type(module) is torch.nn.Linear for module in quantized.network.modules())
    with torch.inference_mode():
        features = exact.features(*pad_waveforms(speechlike))
        logits, lengths = exact.network(*features)
        int8_logits, int8_lengths = quantized.network(*features)
    assert torch.equal(lengths, int8_lengths)
    assert float((int8_logits - logits).abs().max() / logits.abs().max()) < 0.02
    assert float((int8_logits.argmax(-1) == logits.argmax(-1)).float().mean()) > 0.95
    assert len(quantized.transcribe(speechlike)) == len(speechlike)


@pytest.mark.parametrize(
    "options",
    [dict(quantize="int4"), dict(quantize="int8", dtype=torch.bfloat16), dict(quantize="int8", device="meta")],
)
def test_bad_quantisation_options(small_checkpoint, options) -> None:
    with pytest.raises(ValueError, match="quantize"):
        load_model(small_checkpoint.directory, **options)
