"""The corpus recipe: sentence pool, synthesis with both engines, augmentation, parquet output."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile

from recipe.sentences import clock_words, normalize_text, number_words, sentence_pool, year_words
from recipe.synthesize import (
    PASSAGE_SENTENCES,
    PAUSE_SECONDS,
    Voice,
    augment,
    available_voices,
    draw_voice,
    passages,
    synthesize,
    write_corpus,
)


def test_normal_form() -> None:
    assert normalize_text("Don't STOP, e-mail me!") == "don't stop e mail me"
    assert normalize_text("  two   spaces\tand\nlines ") == "two spaces and lines"


def test_numbers_are_spelled_out() -> None:
    assert number_words(406) == "four hundred and six"
    assert number_words(21_000) == "twenty one thousand"
    assert number_words(12_345) == "twelve thousand three hundred and forty five"
    assert year_words(1999) == "nineteen ninety nine"
    assert year_words(2005) == "two thousand and five"
    assert year_words(1905) == "nineteen oh five"
    assert clock_words(7, 5) == "seven oh five"


def test_sentence_pool_is_deterministic_distinct_and_normalised() -> None:
    pool = sentence_pool(3000, seed=7)
    assert pool == sentence_pool(3000, seed=7)
    assert pool != sentence_pool(3000, seed=8)
    assert len(set(pool)) == 3000
    assert all(normalize_text(s) == s and 3 <= len(s.split()) <= 25 for s in pool)
    assert len({w for s in pool for w in s.split()}) > 800
    assert any(" hundred " in s for s in pool)
    excluded = set(pool[:1000])
    assert not excluded & set(sentence_pool(2000, seed=7, exclude=excluded))


def test_voices_of_both_engines_are_available() -> None:
    voices = available_voices()
    assert {v.engine for v in voices} == {"espeak-ng", "flite"}
    assert len(voices) >= 20


@pytest.mark.parametrize("voice", [Voice("espeak-ng", "en-gb+f2"), Voice("flite", "kal")])
def test_synthesis_gives_16k_speech(voice: Voice) -> None:
    audio = synthesize("the train leaves at seven oh five", voice)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0.8 < len(audio) / 16000 < 5
    assert np.abs(audio).max() > 0.05
    faster = synthesize("the train leaves at seven oh five", voice, speed=1.3)
    assert len(faster) < 0.9 * len(audio)


def test_augmentation_keeps_speech_in_range() -> None:
    audio = synthesize("hello there", Voice("espeak-ng", "en-us"))
    for seed in range(5):
        out = augment(audio, np.random.default_rng(seed))
        assert 0.88 * len(audio) < len(out) < 1.12 * len(audio) + 0.6 * 16000
        assert np.isfinite(out).all() and np.abs(out).max() <= 1.0


def test_voice_draws_share_utterances_by_voice_or_by_engine() -> None:
    voices = [Voice("espeak-ng", f"en-us+{n}") for n in range(9)] + [Voice("flite", "kal")]
    draws = {
        draw: [draw_voice(voices, draw, np.random.default_rng([5, i])) for i in range(2000)]
        for draw in ("voices", "engines")
    }
    flite_share = {draw: sum(v.engine == "flite" for v in drawn) / 2000 for draw, drawn in draws.items()}
    assert flite_share["voices"] == pytest.approx(0.1, abs=0.02)
    assert flite_share["engines"] == pytest.approx(0.5, abs=0.03)
    assert set(draws["engines"]) == set(voices)
    with pytest.raises(ValueError, match="unknown voice draw 'speakers'"):
        draw_voice(voices, "speakers", np.random.default_rng(0))


def test_corpus_parquet_is_decodable_and_independent_of_workers(tmp_path) -> None:
    sentences = sentence_pool(6, seed=3)
    voices = [Voice("espeak-ng", "en-us"), Voice("flite", "kal")]
    write_corpus(tmp_path / "one.parquet", "x", sentences, voices, seed=1, augmented=True, workers=1)
    write_corpus(tmp_path / "two.parquet", "x", sentences, voices, seed=1, augmented=True, workers=2)
    one, two = pq.read_table(tmp_path / "one.parquet"), pq.read_table(tmp_path / "two.parquet")
    assert one.column_names == ["id", "audio", "text", "voice", "duration"]
    assert one.equals(two)
    assert one.column("text").to_pylist() == sentences
    for row in one.to_pylist():
        audio, rate = soundfile.read(io.BytesIO(row["audio"]))
        assert rate == 16000 and audio.ndim == 1
        assert row["duration"] == pytest.approx(len(audio) / 16000)
        assert row["voice"] in {"espeak-ng:en-us", "flite:kal"}


def test_passages_are_several_sentences_in_one_voice_with_pauses(tmp_path) -> None:
    sentences = sentence_pool(20, seed=4)
    chosen = passages(sentences, 5, seed=9)
    assert chosen == passages(sentences, 5, seed=9) and chosen != passages(sentences, 5, seed=10)
    assert all(PASSAGE_SENTENCES[0] <= len(p) <= PASSAGE_SENTENCES[1] and set(p) <= set(sentences) for p in chosen)
    voice = Voice("espeak-ng", "en-us")
    write_corpus(tmp_path / "p.parquet", "p", [chosen[0], chosen[0][0]], [voice], seed=1, augmented=False, workers=1)
    passage, single = pq.read_table(tmp_path / "p.parquet").to_pylist()
    assert passage["text"] == " ".join(chosen[0]) and single["text"] == chosen[0][0]
    spoken = sum(len(synthesize(s, voice, speed=1.0)) for s in chosen[0]) / 16000  # at the engine's normal speed
    pauses = (len(chosen[0]) - 1) * np.array(PAUSE_SECONDS)
    assert spoken / 1.15 + pauses[0] <= passage["duration"] <= spoken / 0.8 + pauses[1]


def test_voice_changes_give_passages_read_in_turns(tmp_path) -> None:
    sentences = sentence_pool(30, seed=6)
    chosen = [p for p in passages(sentences, 12, seed=2) if len(p) >= 4][:3]
    voices = [Voice("espeak-ng", "en-us"), Voice("flite", "kal")]
    utterances = [*chosen, sentences[0]]
    write_corpus(tmp_path / "one.parquet", "c", utterances, voices, seed=1, augmented=False, workers=1)
    write_corpus(tmp_path / "off.parquet", "c", utterances, voices, seed=1, augmented=False, workers=1, voice_changes=0)
    write_corpus(
        tmp_path / "turns.parquet", "c", utterances, voices, seed=1, augmented=False, workers=1, voice_changes=1
    )
    one, off, turns = (pq.read_table(tmp_path / f"{name}.parquet") for name in ("one", "off", "turns"))
    assert one.equals(off)  # no voice changes: the corpus of before, byte for byte
    assert turns.column("text").to_pylist() == one.column("text").to_pylist()
    assert all(" / " not in voice for voice in one.column("voice").to_pylist())
    *passage_voices, single_voice = turns.column("voice").to_pylist()
    # each sentence draws its voice anew (so a passage may still keep one): the voices are listed in order of first turn
    assert all(set(voice.split(" / ")) <= {"espeak-ng:en-us", "flite:kal"} for voice in passage_voices)
    assert any(len(voice.split(" / ")) == 2 for voice in passage_voices)
    assert single_voice in {"espeak-ng:en-us", "flite:kal"}  # a single sentence has no turns
    assert turns.column("audio").to_pylist()[-1] == one.column("audio").to_pylist()[-1]
