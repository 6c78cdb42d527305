"""Buffered streaming (pipeline/streaming.py) with local stages: seams, events, limits, and the PCM front end."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import soxr
import torch

from model.audio import AudioError, PCMStream
from model.config import EncoderConfig, FeatureConfig, FrameTiming
from model.decoding import token_spans
from model.stages import NOTHING_ENCODED, Buckets, Decoder, Encoder, Featurizer
from model.windows import plan_windows
from pipeline.streaming import Stream, StreamError, StreamSettings, run_stream

TIMING = FrameTiming.of(FeatureConfig(), EncoderConfig())  # the official models' (and the embedded one's)
FRAME = TIMING.samples  # samples per encoder frame
BUCKETS = Buckets((1, 8), (600, 1200))  # windows of up to 12 s
SECONDS = 8  # of the long recording, for the tests of the default settings


@pytest.fixture(scope="module")
def stages() -> Iterator[tuple[Featurizer, Encoder, Decoder]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many small windows: a second thread only adds contention on a shared machine
    yield (
        Featurizer.from_pretrained(None, BUCKETS.max_frames, context_seconds=2.0),
        Encoder.from_pretrained(None, BUCKETS, compile=False),
        Decoder.from_pretrained(None),
    )
    torch.set_num_threads(threads)


def pieces(audio: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """`audio` cut into pieces whose sizes cycle through `sizes`."""
    cuts, position, index = [], 0, 0
    while position < len(audio):
        cuts.append(audio[position : position + sizes[index % len(sizes)]])
        position, index = position + sizes[index % len(sizes)], index + 1
    return cuts


def streamed(stages, audio: np.ndarray, settings: StreamSettings, sizes: list[int]) -> list[dict]:
    featurizer, encoder, decoder = stages
    stream = Stream(featurizer, decoder, settings)
    return list(run_stream(stream, iter(pieces(audio, sizes)), lambda features: encoder([features])[0]))


@pytest.mark.parametrize(
    "settings, sizes",
    [
        (StreamSettings(), [FRAME * 10]),
        (
            StreamSettings(),
            [77, 16000 * 5, 3333, 16000 * 20],
        ),  # pieces larger than a chunk: steps commit several chunks
        (StreamSettings(chunk_seconds=0.08, left_context_seconds=0.08, lookahead_seconds=0.0), [FRAME * 3 + 5]),
        (StreamSettings(chunk_seconds=2.4, left_context_seconds=0.4, lookahead_seconds=0.8), [16000]),
    ],
)
def test_seams_keep_every_token_exactly_once(stages, settings: StreamSettings, sizes: list[int]) -> None:
    """An encoder that answers every window with its slice of one fixed best path (what a model whose output
    does not depend on context would do): streaming must give exactly that path's tokens, whatever the seams."""
    featurizer, _, decoder = stages
    rng = np.random.default_rng(7)
    frames = 800  # 64 s
    runs = rng.integers(1, 9, frames)  # runs of 1 to 8 frames, so many tokens straddle a seam
    labels = np.where(rng.random(frames) < 0.4, decoder.tokenizer.blank_id, rng.integers(0, 256, frames))
    path = np.repeat(labels, runs)[:frames].astype(np.int32)
    stream = Stream(featurizer, decoder, settings)
    events = []
    for piece in [*pieces(np.full(frames * FRAME, 0.1, np.float32), sizes), None]:
        stream.end() if piece is None else stream.feed(piece)
        while (window := stream.next_window()) is not None:
            offset = window.window.offset
            events += stream.accept(window, path[offset : offset + math.ceil(len(window.audio) / FRAME)])
    expected = decoder.transcript(token_spans(path.tolist(), decoder.tokenizer.blank_id), 0.0)
    finals = [event for event in events if event["type"] == "final"]
    assert events[-1] == {"type": "done", "text": expected.text}
    words = [word for event in finals for word in event["words"]]
    assert [(w["word"], w["start"]) for w in words] == [(w.word, w.start) for w in expected.words]
    if settings.lookahead_seconds >= 8 * TIMING.seconds:  # else a word's end is cut where its window ends
        assert words == [vars(word) for word in expected.words]


@pytest.mark.parametrize("settings", [StreamSettings(), StreamSettings(2.4, 1.6, 0.8)])
def test_tokens_a_window_places_a_frame_off_are_kept_once(stages, settings: StreamSettings) -> None:
    """An encoder that answers each window with its slice of one best path shifted by -1, 0 or +1 frame (a model
    places a token a little differently with other context): tokens that move across a seam are neither doubled
    nor dropped, where keeping each window's own part alone would do both."""
    featurizer, _, decoder = stages
    rng = np.random.default_rng(3)
    frames = 800
    labels = np.where(rng.random(frames) < 0.4, decoder.tokenizer.blank_id, rng.integers(0, 256, frames))
    path = np.repeat(labels, rng.integers(1, 5, frames))[:frames].astype(np.int32)
    blank = [decoder.tokenizer.blank_id]
    path[:4] = path[-4:] = blank  # no token where a shift would push it out of the audio
    stream, events, shifts = Stream(featurizer, decoder, settings), [], iter(np.tile([1, -1, 0], frames))
    for piece in [*pieces(np.full(frames * FRAME, 0.1, np.float32), [FRAME * 10]), None]:
        stream.end() if piece is None else stream.feed(piece)
        while (window := stream.next_window()) is not None:
            ids = path[window.window.offset : window.window.offset + math.ceil(len(window.audio) / FRAME)]
            shift = next(shifts)
            shifted = {1: np.concatenate([blank, ids[:-1]]), -1: np.concatenate([ids[1:], blank]), 0: ids}[shift]
            events += stream.accept(window, shifted.astype(np.int32))
    assert events[-1]["text"] == decoder.transcript(token_spans(path.tolist(), decoder.tokenizer.blank_id), 0.0).text


@pytest.mark.parametrize("seconds", [12.5, 20.1, 30.0, 33.5, 37.0, 64.2])
def test_matching_settings_cut_the_offline_windows(stages, seconds: float) -> None:
    """A stream whose chunk, context and look-ahead equal the long-audio windows' stride and context cuts exactly
    those windows, up to the last, for audio longer than one window (shorter audio is one window offline, while a
    stream that cannot know where the audio ends commits its first chunk as soon as its look-ahead has arrived)."""
    featurizer, _, decoder = stages
    samples = round(seconds * 16000)
    stream = Stream(featurizer, decoder, StreamSettings(8.0, 2.0, 2.0))
    cut = []
    for piece in [*pieces(np.full(samples, 0.1, np.float32), [16000]), None]:
        stream.end() if piece is None else stream.feed(piece)
        while (window := stream.next_window()) is not None:
            start = window.window.offset * FRAME
            cut.append((start, start + len(window.audio), window.window))
            stream.accept(window, NOTHING_ENCODED)
    assert cut == plan_windows(samples, FRAME, featurizer.window_samples, featurizer.context_samples)


def test_matching_the_offline_windows_gives_the_offline_transcript(stages, long_recording: np.ndarray) -> None:
    """Chunks, context and look-ahead equal to the long-audio windows (12 s, 2 s of context on each side) commit
    the same tokens from the same windows as the offline path, with the real model."""
    featurizer, encoder, decoder = stages
    featurized = featurizer(long_recording)
    offline = decoder(featurized.windows, encoder(featurized.features), featurized.duration)
    events = streamed(stages, long_recording, StreamSettings(8.0, 2.0, 2.0), [FRAME * 4 + 123])
    assert events[-1] == {"type": "done", "text": offline.text}
    words = [word for event in events if event["type"] == "final" for word in event["words"]]
    assert words == [vars(word) for word in offline.words]


def test_events_partials_come_first_and_finals_add_up_to_done(stages, long_recording: np.ndarray) -> None:
    audio = long_recording[: 16000 * SECONDS]
    events = streamed(stages, audio, StreamSettings(), [1600])
    kinds = [event["type"] for event in events]
    assert kinds[-1] == "done" and kinds.count("done") == 1 and "error" not in kinds
    assert kinds.index("partial") < kinds.index("done") and kinds.index("final") < kinds.index("done")
    assert kinds.count("partial") == math.floor((SECONDS - 1.6) / 0.8)  # one per step but the last
    ends = [event["end"] for event in events if event["type"] == "partial"]
    assert ends == sorted(ends) and ends[0] == pytest.approx(2.4)
    finals = [event for event in events if event["type"] == "final"]
    assert " ".join(event["text"] for event in finals) == events[-1]["text"] != ""
    starts = [word["start"] for event in finals for word in event["words"]]
    assert starts == sorted(starts) and starts[-1] < SECONDS
    # A step commits the same tokens whatever the frame sizes were, as long as every chunk was encoded on its own.
    assert streamed(stages, audio, StreamSettings(), [FRAME - 1, 5000, 333]) == events


def test_silence_and_empty_streams_are_done_without_the_encoder(stages) -> None:
    featurizer, _, decoder = stages

    def no_encoder(features: np.ndarray) -> np.ndarray:
        raise AssertionError("silence must not reach the encoder")

    for audio in (np.zeros(16000 * 5, np.float32), np.zeros(0, np.float32), np.full(100, 0.3, np.float32)):
        events = list(run_stream(Stream(featurizer, decoder, StreamSettings()), iter([audio]), no_encoder))
        assert events[-1] == {"type": "done", "text": ""}
        assert all(event["text"] == "" for event in events)


def test_a_client_far_ahead_of_transcription_is_refused(stages) -> None:
    featurizer, _, decoder = stages
    stream = Stream(featurizer, decoder, StreamSettings(), max_backlog_seconds=5.0)
    stream.feed(np.zeros(16000 * 6, np.float32))  # 2.4 s for the first step (chunk and look-ahead), 3.6 s waiting
    with pytest.raises(StreamError, match=r"faster than it can be transcribed: 5.6 s are waiting \(the limit is 5 s\)"):
        stream.feed(np.zeros(16000 * 2, np.float32))
    stream = Stream(featurizer, decoder, StreamSettings(), max_backlog_seconds=5.0)
    for _ in range(30):  # a client in step with transcription never reaches the limit
        stream.feed(np.zeros(16000, np.float32))
        while (window := stream.next_window()) is not None:
            stream.accept(window, NOTHING_ENCODED)
    stream.end()
    with pytest.raises(StreamError, match="after the end"):
        stream.feed(np.zeros(10, np.float32))


def test_a_stream_past_its_length_limit_is_refused(stages) -> None:
    featurizer, _, decoder = stages
    stream = Stream(featurizer, decoder, StreamSettings(), max_seconds=3.0)
    stream.feed(np.zeros(16000 * 3, np.float32))  # exactly the limit is allowed
    with pytest.raises(StreamError, match=r"ran past its limit of 3 s of audio; open a new session"):
        stream.feed(np.zeros(1, np.float32))


@pytest.mark.parametrize(
    "settings, message",
    [
        (StreamSettings(chunk_seconds=0.0), "chunk_seconds must be at least one encoder frame"),
        (StreamSettings(left_context_seconds=0.0), "left_context_seconds must be at least one encoder frame"),
        (
            StreamSettings(lookahead_seconds=-1.0),
            "lookahead_seconds must be a non-negative number of seconds, got -1.0",
        ),
        (StreamSettings(chunk_seconds=math.nan), "chunk_seconds must be a non-negative number"),
        (
            StreamSettings(left_context_seconds=10.0, lookahead_seconds=2.0),
            r"at most 12 s \(the encoder's largest window\), got 12.8 s",
        ),
    ],
)
def test_settings_are_checked_against_the_buckets(stages, settings: StreamSettings, message: str) -> None:
    featurizer, _, decoder = stages
    with pytest.raises(StreamError, match=message):
        Stream(featurizer, decoder, settings)


def test_the_default_window_fills_the_default_smallest_bucket() -> None:
    StreamSettings().check(TIMING, Buckets().frame_counts[0] * 0.01)  # no padding into the next bucket up
    with pytest.raises(StreamError):
        StreamSettings(left_context_seconds=7.68).check(TIMING, Buckets().frame_counts[0] * 0.01)


def test_pcm_frames_are_decoded_and_resampled_across_frames() -> None:
    rng = np.random.default_rng(0)
    pcm = (rng.standard_normal(44100) * 3000).astype("<i2")
    stream = PCMStream(44100)
    cuts = [0, 1, 999, 1000, 20000, 44100]
    pieces_ = [stream(pcm[a:b].tobytes()) for a, b in zip(cuts, cuts[1:])] + [stream(b"", last=True)]
    whole = soxr.resample(pcm.astype(np.float32) / 32768, 44100, 16000, quality="HQ")
    np.testing.assert_allclose(np.concatenate(pieces_), whole, atol=1e-6)
    assert np.array_equal(PCMStream(16000)(pcm[:10].tobytes()), pcm[:10] / np.float32(32768))
    with pytest.raises(AudioError, match="whole 16-bit samples .* got 3 bytes"):
        PCMStream(16000)(b"abc")
    with pytest.raises(AudioError, match="sample_rate must be 8000 to 192000 Hz, got 100"):
        PCMStream(100)
