"""Shared fixtures."""

from __future__ import annotations

import numpy as np
import pytest

from tests.reference import SMALL_ENCODER, ReferenceCheckpoint, make_reference_checkpoint


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> ReferenceCheckpoint:
    return make_reference_checkpoint(tmp_path_factory.mktemp("small"), SMALL_ENCODER, vocab_size=257)


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
