"""Synthesised English speech corpora (espeak-ng and flite voices), written as parquet for training and tests.

    python -m recipe.synthesize --out data/corpus            # 51 h of speech, 3.5 GB: 20-45 minutes on 2 cores
    python -m recipe.synthesize --out data/corpus_engines --draw engines   # the same sentences, half in flite
    python -m recipe.synthesize --out data/corpus_turns --draw engines --voice-changes 0.5   # conversations too

writes train/dev/test.parquet (disjoint sentences, training voices), holdout_voice.parquet (the test sentences
in a voice never used for training) and dev_passages.parquet (the dev sentences read several at a time). Besides
single sentences, train.parquet holds passages: 2-8 training sentences read in one go with pauses between them
(4-45 s), so that the model also learns audio as long as the encoder's windows. Columns: id, audio (16 kHz mono
FLAC bytes), text, voice (`engine:name`; for a passage read in turns, its voices joined by " / "), duration.

Each utterance draws its voice from all the split's voices alike (`--draw voices`: espeak-ng has 49 voices, flite
4, so 1 utterance in 13 is flite), or the engine first and then one of its voices (`--draw engines`: half flite).
A passage is read by one voice, or, in a share `--voice-changes` of them, each sentence by a voice of its own, as in
a conversation (the default corpora have none; models trained on them decode such audio worse than its sentences).
"""

from __future__ import annotations

import argparse
import io
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile

from model.audio import SAMPLE_RATE, resample
from recipe.sentences import sentence_pool

ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
ESPEAK_VARIANTS = ("", "+m3", "+m7", "+f2", "+f4", "+klatt", "+croak")
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
DEFAULT_HOLDOUT = "flite:slt"
VOICE_DRAWS = ("voices", "engines")  # how an utterance picks its voice: see the module's docstring
# The recipe of the shipped model: sentence_pool(sum of these, DEFAULT_SEED), split in this order.
DEFAULT_SPLITS = {"train": 24000, "dev": 400, "test": 400}
DEFAULT_SEED = 0
DEFAULT_PASSAGES = {"train": 6000, "dev": 100}
PASSAGE_SENTENCES = (2, 8)  # fewest and most sentences in a passage
PAUSE_SECONDS = (0.1, 0.8)  # silence between a passage's sentences


@dataclass(frozen=True)
class Voice:
    engine: str  # "espeak-ng" or "flite"
    name: str  # e.g. "en-gb+f2" or "slt"

    def __str__(self) -> str:
        return f"{self.engine}:{self.name}"


class SynthesisError(RuntimeError):
    pass


def available_voices() -> list[Voice]:
    """Every espeak-ng accent/variant pair and every flite voice installed here."""
    voices = [Voice("espeak-ng", accent + variant) for accent in ESPEAK_ACCENTS for variant in ESPEAK_VARIANTS]
    listed = subprocess.run(["flite", "-lv"], capture_output=True, text=True, check=True).stdout.split()
    return voices + [Voice("flite", name) for name in FLITE_VOICES if name in listed]


def synthesize(text: str, voice: Voice, speed: float = 1.0, pitch: int = 50) -> np.ndarray:
    """Speak `text` at `speed` (1 = the engine's normal rate) and espeak pitch 0-99; float32 mono at 16 kHz."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as wav:
        if voice.engine == "espeak-ng":
            command = ["espeak-ng", "-v", voice.name, "-s", str(round(175 * speed)), "-p", str(pitch), "-w", wav.name]
        elif voice.engine == "flite":
            command = ["flite", "-voice", voice.name, "--setf", f"duration_stretch={1 / speed:.3f}", "-o", wav.name]
        else:
            raise SynthesisError(f"unknown engine {voice.engine!r}")
        result = subprocess.run([*command, text], capture_output=True, text=True)
        if result.returncode != 0:
            raise SynthesisError(f"{voice} failed on {text!r}: {result.stderr.strip()}")
        audio, rate = soundfile.read(wav.name, dtype="float32")
    if audio.size == 0:
        raise SynthesisError(f"{voice} produced no audio for {text!r}")
    return resample(audio, rate)


def augment(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Speed perturbation (0.9-1.1), gain (-12..+3 dB, clip-safe), noise at 10-40 dB SNR, silence padding."""
    audio = resample(audio, SAMPLE_RATE, round(SAMPLE_RATE / rng.uniform(0.9, 1.1)))
    pad = rng.integers(0, int(0.3 * SAMPLE_RATE), size=2)
    audio = np.concatenate([np.zeros(pad[0], np.float32), audio, np.zeros(pad[1], np.float32)])
    if rng.random() < 0.8:
        noise = rng.standard_normal(audio.size).astype(np.float32)
        if rng.random() < 0.5:  # brown-ish noise: integrated, then re-centred
            noise = np.cumsum(noise)
            noise -= np.convolve(noise, np.ones(400) / 400, mode="same")
        snr_db = rng.uniform(10, 40)
        speech_power = np.mean(audio**2) + 1e-10
        noise *= np.sqrt(speech_power / (np.mean(noise**2) + 1e-10) / 10 ** (snr_db / 10))
        audio = audio + noise
    audio = audio * 10 ** (rng.uniform(-12, 3) / 20)
    peak = np.abs(audio).max()
    return (audio / peak * 0.99 if peak > 0.99 else audio).astype(np.float32)


def encode_flac(audio: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, SAMPLE_RATE, format="FLAC")
    return buffer.getvalue()


# Voices the default corpus trains on (it holds out DEFAULT_HOLDOUT), for speech of unseen sentences in seen voices.
SEEN_VOICES = (
    Voice("espeak-ng", "en-us"),
    Voice("espeak-ng", "en-gb+f2"),
    Voice("espeak-ng", "en-029+m3"),
    Voice("flite", "kal16"),
    Voice("flite", "awb"),
    Voice("flite", "rms"),
)
UNSEEN_SEED = 2026  # the sentence pool's seed for unseen_speech (the tests' sentences)


def unseen_speech(
    count: int = 36,
    seed: int = UNSEEN_SEED,
    voice: Voice | None = None,
) -> tuple[list[str], list[np.ndarray]]:
    """`count` sentences the default corpus never contained, spoken in turn by the SEEN_VOICES (or all by `voice`),
    16 kHz float32: the embedded model's test of issue 3 and the figures of its model card."""
    training_text = set(sentence_pool(sum(DEFAULT_SPLITS.values()), DEFAULT_SEED))
    sentences = sentence_pool(count, seed=seed, exclude=training_text)
    return sentences, [synthesize(text, voice) for text, voice in zip(sentences, unseen_speech_voices(count, voice))]


def unseen_speech_voices(count: int, voice: Voice | None = None) -> list[Voice]:
    """The voice of each of unseen_speech's sentences."""
    return [voice or SEEN_VOICES[i % len(SEEN_VOICES)] for i in range(count)]


def back_to_back(clips: list[np.ndarray], pause_seconds: float) -> np.ndarray:
    """The clips one after another, each followed by `pause_seconds` of silence: one long recording."""
    pause = np.zeros(round(pause_seconds * SAMPLE_RATE), np.float32)
    return np.concatenate([part for clip in clips for part in (clip, pause)])


Utterance = str | tuple[str, ...]  # one sentence, or a passage of sentences read by one voice with pauses


def passages(sentences: list[str], count: int, seed: int) -> list[tuple[str, ...]]:
    """`count` passages of PASSAGE_SENTENCES sentences drawn from `sentences`, the same for the same seed."""
    rng = random.Random(seed)
    return [tuple(rng.sample(sentences, rng.randint(*PASSAGE_SENTENCES))) for _ in range(count)]


def voice_named(name: str, voices: list[Voice]) -> Voice:
    """The voice of `voices` written `name` ("engine:name"); ValueError listing them if none is."""
    for voice in voices:
        if str(voice) == name:
            return voice
    raise ValueError(f"{name} is not installed; choose from {', '.join(map(str, voices))}")


def draw_voice(voices: list[Voice], draw: str, rng: np.random.Generator) -> Voice:
    """One of `voices`: any alike (draw "voices"), or one of a uniformly drawn engine's (draw "engines")."""
    if draw == "engines":
        engines = sorted({voice.engine for voice in voices})
        engine = engines[rng.integers(len(engines))]
        voices = [voice for voice in voices if voice.engine == engine]
    elif draw != "voices":
        raise ValueError(f"unknown voice draw {draw!r}: one of {', '.join(VOICE_DRAWS)}")
    return voices[rng.integers(len(voices))]


def _utterance(job: tuple[str, Utterance, list[Voice], str, float, int, int, bool]) -> dict:
    """One row; its randomness comes from (seed, index) alone, so any worker count gives the same corpus.

    A passage is read by one voice, or, with probability `voice_changes`, each of its sentences by a voice (and speed
    and pitch) drawn anew, as in a conversation; its row's voice then lists the voices in order of first turn."""
    utterance_id, utterance, voices, draw, voice_changes, seed, index, augmented = job
    rng = np.random.default_rng([seed, index])
    voice = draw_voice(voices, draw, rng)
    speed, pitch = rng.uniform(0.8, 1.15), int(rng.integers(30, 71))
    sentences = (utterance,) if isinstance(utterance, str) else utterance
    changes = len(sentences) > 1 and voice_changes > 0 and rng.random() < voice_changes
    parts, speakers = [], []
    for sentence in sentences:
        if parts:
            parts.append(np.zeros(round(rng.uniform(*PAUSE_SECONDS) * SAMPLE_RATE), np.float32))
            if changes:
                voice = draw_voice(voices, draw, rng)
                speed, pitch = rng.uniform(0.8, 1.15), int(rng.integers(30, 71))
        parts.append(synthesize(sentence, voice, speed=speed, pitch=pitch))
        speakers.append(str(voice))
    audio = np.concatenate(parts)
    if augmented:
        audio = augment(audio, rng)
    return {
        "id": utterance_id,
        "audio": encode_flac(audio),
        "text": " ".join(sentences),
        "voice": " / ".join(dict.fromkeys(speakers)),
        "duration": len(audio) / SAMPLE_RATE,
    }


def write_corpus(
    path: Path,
    name: str,
    utterances: list[Utterance],
    voices: list[Voice],
    seed: int,
    augmented: bool,
    workers: int = 2,
    draw: str = "voices",
    voice_changes: float = 0.0,
) -> None:
    """Synthesise `utterances` into one parquet file, printing progress to stderr."""
    jobs = [
        (f"{name}-{i:06d}", utterance, voices, draw, voice_changes, seed, i, augmented)
        for i, utterance in enumerate(utterances)
    ]
    rows, started = [], time.time()
    with Pool(workers) as pool:
        for rows_done, row in enumerate(pool.imap(_utterance, jobs, chunksize=8), start=1):
            rows.append(row)
            if rows_done % 200 == 0 or rows_done == len(jobs):
                rate = rows_done / (time.time() - started)
                print(f"\r{name}: {rows_done}/{len(jobs)} utterances, {rate:.1f}/s", end="", file=sys.stderr)
    print(file=sys.stderr)
    pq.write_table(pa.Table.from_pylist(rows), path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipe.synthesize", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    for split, count in DEFAULT_SPLITS.items():
        parser.add_argument(f"--{split}", type=int, default=count, help=f"{split} utterances")
    for split, count in DEFAULT_PASSAGES.items():
        parser.add_argument(f"--{split}-passages", type=int, default=count, help=f"{split} passages")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--holdout-voice", default=DEFAULT_HOLDOUT, help="engine:name of the voice kept out of training"
    )
    parser.add_argument(
        "--draw",
        choices=VOICE_DRAWS,
        default="voices",
        help="each utterance's voice: any of all alike, or an engine first and then one of its voices",
    )
    parser.add_argument(
        "--voice-changes",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="share of passages whose sentences are each read by a voice drawn anew, as in a "
        "conversation (default 0: one voice per passage)",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.voice_changes <= 1:
        parser.error(f"--voice-changes must be between 0 and 1, got {args.voice_changes}")

    voices = available_voices()
    try:
        held_out = [voice_named(args.holdout_voice, voices)]
    except ValueError as error:
        parser.error(f"--holdout-voice {error}")
    seen = [v for v in voices if v not in held_out]
    pool = sentence_pool(args.train + args.dev + args.test, args.seed)
    train, dev, test = pool[: args.train], pool[args.train : args.train + args.dev], pool[args.train + args.dev :]
    splits = {
        "train": (train + passages(train, args.train_passages, args.seed), seen, True),
        "dev": (dev, seen, False),
        "test": (test, seen, False),
        "holdout_voice": (test, held_out, False),
        "dev_passages": (passages(dev, args.dev_passages, args.seed + 1), seen, False),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for offset, (name, (sentences, split_voices, augmented)) in enumerate(splits.items()):
        write_corpus(
            args.out / f"{name}.parquet",
            name,
            sentences,
            split_voices,
            args.seed + offset,
            augmented,
            args.workers,
            args.draw,
            args.voice_changes,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
