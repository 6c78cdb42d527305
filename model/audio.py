"""Reading, resampling and down-mixing audio: everything before the feature extractor.

The project's one sample rate lives here; the feature extractor checks its config against it.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import soundfile
import soxr

SAMPLE_RATE = 16_000  # Hz; every Parakeet checkpoint is trained at 16 kHz
MIN_STREAM_RATE, MAX_STREAM_RATE = 8_000, 192_000  # Hz; the rates a PCM stream may arrive at
# Hz; the rates a file may declare. Beyond them a header lies (or the file is not speech): resampling from 1 Hz or
# to 1 GHz would take minutes of CPU and gigabytes of memory for seconds of declared audio.
MIN_FILE_RATE, MAX_FILE_RATE = 1_000, 768_000
DECODE_BLOCK_VALUES = 1 << 20  # samples (of all channels) decoded at a time: 4 MB, whatever the header declares
UNKNOWN_LENGTH = 2**63 - 1  # libsndfile's frame count of a file whose header leaves its length open

AudioSource = str | os.PathLike | bytes | np.ndarray


class AudioError(ValueError):
    """Audio that cannot be turned into a mono 16 kHz waveform; the message names the input."""


class AudioTooLongError(AudioError):
    """Audio longer than the caller's limit; an encoded file is refused from its header, before it is decoded."""


def too_long(name: str, seconds: float, max_seconds: float) -> AudioTooLongError:
    return AudioTooLongError(f"{name}: audio is {seconds:.0f} s long, over the limit of {max_seconds:g} s")


class UnsupportedFormatError(AudioError):
    """Audio in a container this package recognises but cannot decode (libsndfile reads wav, flac, ogg, mp3)."""


# Leading bytes of audio containers libsndfile cannot read, so they get a specific error instead of "corrupt".
UNSUPPORTED_CONTAINERS = {
    b"ftyp": "MP4/M4A/AAC",
    b"\x1aE\xdf\xa3": "WebM/Matroska",
    b"#!AMR": "AMR",
    b"\xff\xf1": "ADTS AAC",
    b"\xff\xf9": "ADTS AAC",
}


def unsupported_container(data: bytes) -> str | None:
    """The name of an unsupported container `data` starts with, if any."""
    for magic, name in UNSUPPORTED_CONTAINERS.items():
        if data.startswith(magic) or (magic == b"ftyp" and data[4:8] == magic):
            return name
    return None


def resample(audio: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling (libsoxr, 'HQ') of a mono float waveform."""
    if orig_sr <= 0:
        raise AudioError(f"sample rate must be positive, got {orig_sr}")
    if orig_sr == target_sr:
        return audio
    return soxr.resample(audio, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Average channels of a (samples, channels) array; a 1-D array is returned as it is."""
    if audio.ndim == 1:
        return audio
    if audio.ndim == 2:
        with np.errstate(invalid="ignore", over="ignore"):  # NaN or inf samples: validate_waveform names them
            return audio.mean(axis=1, dtype=np.float64).astype(np.float32)
    raise AudioError(f"audio must be 1-D (samples) or 2-D (samples, channels), got shape {audio.shape}")


def validate_waveform(audio: np.ndarray, name: str, allow_empty: bool = False) -> np.ndarray:
    """Check a decoded waveform and return it as contiguous float32."""
    if not isinstance(audio, np.ndarray):
        raise AudioError(f"{name}: expected a numpy array, got {type(audio).__name__}")
    if audio.dtype.kind not in "fiu":
        raise AudioError(f"{name}: audio must be a float or integer array, got dtype {audio.dtype}")
    if audio.dtype.kind in "iu":
        raise AudioError(
            f"{name}: integer samples ({audio.dtype}) are ambiguous; pass float audio in [-1, 1] "
            "(e.g. pcm.astype(np.float32) / 32768)"
        )
    audio = to_mono(audio)
    if audio.size == 0 and not allow_empty:
        raise AudioError(f"{name}: audio is empty")
    if not np.isfinite(audio).all():
        raise AudioError(f"{name}: audio contains NaN or infinite samples")
    return np.ascontiguousarray(audio, dtype=np.float32)


def decode_audio(data: bytes, name: str = "<bytes>", max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Decode an encoded file (wav, flac, ogg, mp3, ...) held in memory -> mono float32 samples, sample rate.

    libsndfile decodes no more frames than the header declares, so a file declaring more than `max_seconds` is
    refused before any decoding (AudioTooLongError). Decoding runs block by block, channels averaged as each block
    comes, so memory follows the audio decoded, not what a header claims."""
    container = unsupported_container(data[:16])
    if container:
        raise UnsupportedFormatError(f"{name}: {container} audio is not supported; send wav, flac, ogg or mp3")
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as file:
            rate, frames, channels = file.samplerate, file.frames, file.channels
            if not MIN_FILE_RATE <= rate <= MAX_FILE_RATE:
                raise AudioError(f"{name}: sample rate {rate} Hz is outside {MIN_FILE_RATE} to {MAX_FILE_RATE} Hz")
            if frames == UNKNOWN_LENGTH:
                raise AudioError(
                    f"{name}: the file does not say how long it is (written as a stream); re-encode it to a file"
                )
            if max_seconds is not None and frames > max_seconds * rate:
                raise too_long(name, frames / rate, max_seconds)
            blocks = []
            while len(block := file.read(max(1, DECODE_BLOCK_VALUES // channels), "float32", always_2d=True)):
                blocks.append(to_mono(block) if channels > 1 else block[:, 0].copy())
    except soundfile.LibsndfileError as err:
        raise AudioError(f"{name}: cannot decode audio: {err.error_string}") from None
    except (RuntimeError, TypeError) as err:
        raise AudioError(f"{name}: cannot decode audio: {err}") from None
    return (np.concatenate(blocks) if blocks else np.zeros(0, np.float32)), rate


def read_audio(path: str | os.PathLike, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file from disk as mono float32 samples and its sample rate (decode_audio's `max_seconds`).

    The file is read whole and decoded from memory: libsndfile's own file reading reports an undecodable MP3 as
    "File does not exist or is not a regular file"."""
    path = Path(path)
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file")
    if not path.exists():
        raise AudioError(f"{path}: no such audio file")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise AudioError(f"{path}: cannot read the file: {err.strerror}") from None
    return decode_audio(data, str(path), max_seconds)


def load_audio(
    source: AudioSource,
    sample_rate: int = SAMPLE_RATE,
    name: str | None = None,
    allow_empty: bool = False,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Any supported source -> mono float32 waveform at SAMPLE_RATE.

    `sample_rate` is the rate of a numpy `source`; files and bytes carry their own. Audio longer than `max_seconds`
    raises AudioTooLongError (files and bytes from their header, before decoding).
    """
    if isinstance(source, (str, os.PathLike)):
        audio, sample_rate = read_audio(source, max_seconds)
        name = name or str(source)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        name = name or "<bytes>"
        audio, sample_rate = decode_audio(bytes(source), name, max_seconds)
    else:
        name = name or "<array>"
        audio = source
    audio = validate_waveform(audio, name, allow_empty)
    if max_seconds is not None and len(audio) > max_seconds * sample_rate:
        raise too_long(name, len(audio) / sample_rate, max_seconds)
    return resample(audio, sample_rate, SAMPLE_RATE)


class PCMStream:
    """16-bit little-endian mono PCM arriving in pieces at `sample_rate` -> float32 pieces at SAMPLE_RATE.

    One resampler state spans the pieces, so resampling a stream piece by piece gives the same audio as resampling
    it whole, with no clicks at the joins."""

    def __init__(self, sample_rate: int) -> None:
        if not MIN_STREAM_RATE <= sample_rate <= MAX_STREAM_RATE:
            raise AudioError(f"sample_rate must be {MIN_STREAM_RATE} to {MAX_STREAM_RATE} Hz, got {sample_rate}")
        self.sample_rate = sample_rate
        self._resampler = (
            None if sample_rate == SAMPLE_RATE else soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, "float32", "HQ")
        )

    def __call__(self, data: bytes, last: bool = False) -> np.ndarray:
        """The next piece of PCM bytes (`last`: the stream ends with it) -> its float32 samples at SAMPLE_RATE."""
        if len(data) % 2:
            raise AudioError(
                f"a PCM frame must hold whole 16-bit samples (an even number of bytes), got {len(data)} bytes"
            )
        samples = np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
        if self._resampler is None:
            return samples
        return self._resampler.resample_chunk(samples, last=last).astype(np.float32, copy=False)
