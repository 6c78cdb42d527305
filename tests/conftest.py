"""Shared fixtures."""

from __future__ import annotations

import numpy as np
import pytest

from recipe import synthesize
from tests.reference import (
    SMALL_DECODER,
    SMALL_ENCODER,
    ReferenceCheckpoint,
    make_reference_checkpoint,
    make_transducer_checkpoint,
)


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> ReferenceCheckpoint:
    return make_reference_checkpoint(tmp_path_factory.mktemp("small"), SMALL_ENCODER, vocab_size=257)


@pytest.fixture(scope="session")
def small_tdt_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> ReferenceCheckpoint:
    return make_transducer_checkpoint(
        tmp_path_factory.mktemp("tdt"), "tdt", SMALL_ENCODER, SMALL_DECODER, vocab_size=257
    )


@pytest.fixture(scope="session")
def small_rnnt_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> ReferenceCheckpoint:
    """max_symbols_per_step=3, so that decoding hits the limit."""
    return make_transducer_checkpoint(
        tmp_path_factory.mktemp("rnnt"), "rnnt", SMALL_ENCODER, SMALL_DECODER, vocab_size=257, max_symbols_per_step=3
    )


@pytest.fixture(scope="session")
def speechlike() -> list[np.ndarray]:
    """Three clips of different lengths with speech-like spectra (filtered noise bursts), 16 kHz float32."""
    rng = np.random.default_rng(0)
    clips = []
    for seconds in (1.7, 3.2, 0.9):
        noise = rng.standard_normal(int(seconds * 16000)).astype(np.float32)
        envelope = 0.5 + 0.5 * np.sin(np.linspace(0, seconds * 2 * np.pi * 3, noise.size))
        clips.append((0.1 * noise * envelope).astype(np.float32))
    return clips


@pytest.fixture(scope="session")
def unseen_speech() -> tuple[list[str], list[np.ndarray]]:
    """36 sentences the training corpus never contained, spoken by training voices (16 kHz float32)."""
    return synthesize.unseen_speech(36)


@pytest.fixture(scope="session")
def long_recording(unseen_speech: tuple[list[str], list[np.ndarray]]) -> np.ndarray:
    """Over 60 s of speech: 24 unseen sentences in six voices, each followed by 0.3 s of silence (16 kHz float32)."""
    audio = synthesize.back_to_back(unseen_speech[1][:24], pause_seconds=0.3)
    assert len(audio) >= 60 * 16000
    return audio
