"""Broken audio files for the fuzz tests: valid WAV, FLAC, Ogg and MP3 files, mutated by a seeded generator
(truncated, bytes flipped, header fields set to extreme values, declared sizes huge)."""

from __future__ import annotations

import io
import random
import struct
from collections.abc import Callable, Iterator

import numpy as np
import soundfile

EXTREMES_32 = (0, 1, 2, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)
EXTREMES_16 = (0, 1, 3, 255, 0x7FFF, 0xFFFF)


def originals() -> dict[str, bytes]:
    """One short tone in each container and a few layouts libsndfile reads."""
    seconds = np.arange(int(0.5 * 22050)) / 22050
    tone = (0.3 * np.sin(2 * np.pi * 440 * seconds)).astype(np.float32)
    stereo = np.stack([tone, -tone], axis=1)
    files = {}
    for name, audio, rate, fmt, subtype in [
        ("pcm16.wav", tone, 22050, "WAV", "PCM_16"),
        ("float-stereo.wav", stereo, 22050, "WAV", "FLOAT"),
        ("mono.flac", tone, 22050, "FLAC", "PCM_16"),
        ("stereo.flac", stereo, 22050, "FLAC", "PCM_24"),
        ("vorbis.ogg", stereo, 22050, "OGG", "VORBIS"),
        ("mpeg.mp3", tone, 22050, "MP3", "MPEG_LAYER_III"),
    ]:
        buffer = io.BytesIO()
        soundfile.write(buffer, audio, rate, format=fmt, subtype=subtype)
        files[name] = buffer.getvalue()
    return files


def _truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data))]


def _flip_bytes(data: bytes, rng: random.Random) -> bytes:
    mutated = bytearray(data)
    end = min(len(data), rng.choice((64, 512, len(data))))  # the headers more often than the rest
    for _ in range(rng.randint(1, 16)):
        mutated[rng.randrange(end)] = rng.randrange(256)
    return bytes(mutated)


def _wav_field(data: bytes, rng: random.Random) -> bytes:
    """A RIFF/fmt/data field of a WAV file set to an extreme value: sizes, channels, rate, bits, format tag."""
    if not data.startswith(b"RIFF"):
        return _flip_bytes(data, rng)
    fmt = data.find(b"fmt ") + 8
    fields = [(4, 4), (data.find(b"data") + 4, 4), (fmt, 2), (fmt + 2, 2), (fmt + 4, 4), (fmt + 8, 4)]
    fields += [(fmt + 12, 2), (fmt + 14, 2)]
    offset, size = rng.choice(fields)
    value = rng.choice(EXTREMES_32 if size == 4 else EXTREMES_16)
    return data[:offset] + struct.pack("<I" if size == 4 else "<H", value) + data[offset + size :]


def _flac_streaminfo(data: bytes, rng: random.Random) -> bytes:
    """FLAC's STREAMINFO (block sizes, rate, channels, bits, total samples) with one field set to an extreme."""
    if not data.startswith(b"fLaC"):
        return _flip_bytes(data, rng)
    info = int.from_bytes(data[8:42], "big")
    # (bit shift from the right, width) of each field in the 272-bit block
    shift, width = rng.choice([(256, 16), (240, 16), (216, 24), (192, 24), (172, 20), (169, 3), (164, 5), (128, 36)])
    value = rng.choice((0, 1, (1 << width) - 1, rng.randrange(1 << width)))
    info = (info & ~(((1 << width) - 1) << shift)) | (value << shift)
    return data[:8] + info.to_bytes(34, "big") + data[42:]


def _splice(data: bytes, rng: random.Random) -> bytes:
    """A piece of the file repeated or cut out: chunks that overlap, frames that end mid-way."""
    start = rng.randrange(len(data))
    end = min(len(data), start + rng.randint(1, 4096))
    if rng.random() < 0.5:
        return data[:end] + data[start:]
    return data[:start] + data[end:]


def _garbage(data: bytes, rng: random.Random) -> bytes:
    """The first bytes of the file (its magic), then random bytes."""
    return data[: rng.choice((0, 4, 12, 44))] + rng.randbytes(rng.randint(0, 4096))


MUTATIONS: tuple[Callable[[bytes, random.Random], bytes], ...] = (
    _truncate,
    _flip_bytes,
    _wav_field,
    _flac_streaminfo,
    _splice,
    _garbage,
)


def mutants(count: int, seed: int = 0) -> Iterator[tuple[str, bytes]]:
    """`count` (name, bytes) of mutated files, the same ones for the same seed; names say how each was made."""
    rng = random.Random(seed)
    files = originals()
    for index in range(count):
        name = rng.choice(sorted(files))
        data = files[name]
        steps = [rng.choice(MUTATIONS) for _ in range(rng.choice((1, 1, 2, 3)))]
        for step in steps:
            if data:  # an empty file takes no further mutation
                data = step(data, rng)
        yield f"{index}-{name}-{'+'.join(step.__name__.strip('_') for step in steps)}", data
