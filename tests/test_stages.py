"""The stage classes shared by the Serve app and the batch job: windows, buckets, and agreement with the model."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch

from model import load_model
from model.config import EncoderConfig, FeatureConfig, FrameTiming
from model.stages import NOTHING_ENCODED, Buckets, Decoder, Encoder, Featurizer, like_length_batches
from model.windows import Window, plan_windows
from tests.reference import ReferenceCheckpoint

FRAME = FrameTiming.of(FeatureConfig(), EncoderConfig()).samples  # samples per encoder frame, as in the tests' models


@pytest.fixture(scope="module")
def model(small_checkpoint: ReferenceCheckpoint):
    return load_model(small_checkpoint.directory)


def stages(directory, buckets: Buckets, compile: bool = False) -> tuple[Featurizer, Encoder, Decoder]:
    return (
        Featurizer.from_pretrained(directory, buckets.max_frames, context_seconds=0.64),
        Encoder.from_pretrained(directory, buckets, compile=compile),
        Decoder.from_pretrained(directory),
    )


def run(featurizer: Featurizer, encoder: Encoder, decoder: Decoder, audio: np.ndarray):
    featurized = featurizer(audio)
    return decoder(featurized.windows, encoder(featurized.features), featurized.duration)


@pytest.mark.parametrize("samples", [FRAME * 10, FRAME * 31 + 77, FRAME * 100 - 1, 16000 * 60 + 5])
def test_windows_keep_every_frame_exactly_once(samples: int) -> None:
    plan = plan_windows(samples, FRAME, window_samples=FRAME * 30, context_samples=FRAME * 4)
    assert plan[0][0] == 0 and plan[-1][1] == samples
    kept = []
    for start, end, window in plan:
        assert end - start <= FRAME * 30 and start % FRAME == 0 and window.offset == start // FRAME
        assert start // FRAME <= window.keep_start and (window.keep_end == math.inf or window.keep_end * FRAME <= end)
        kept.append((window.keep_start, window.keep_end))
    assert kept[0][0] == 0 and kept[-1][1] == math.inf
    assert all(a[1] == b[0] for a, b in zip(kept, kept[1:]))  # contiguous, no overlap


def test_buckets_pick_the_smallest_fitting_shape() -> None:
    buckets = Buckets((1, 4, 8), (100, 200))
    assert buckets.shape_for(1, 100) == (1, 100)
    assert buckets.shape_for(3, 101) == (4, 200)
    assert len(buckets.shapes()) == 6
    with pytest.raises(ValueError, match="increasing order"):
        Buckets((4, 1), (100,))


@pytest.mark.parametrize("kind", ["ctc", "tdt"])
def test_stages_agree_with_the_model(kind, small_checkpoint, small_tdt_checkpoint, speechlike) -> None:
    directory = (small_checkpoint if kind == "ctc" else small_tdt_checkpoint).directory
    featurizer, encoder, decoder = stages(directory, Buckets((1, 2, 4), (200, 400)))
    model = load_model(directory)
    expected = [model.transcribe(clip)[0] for clip in speechlike]
    assert any(transcript.words for transcript in expected)
    assert [run(featurizer, encoder, decoder, clip) for clip in speechlike] == expected
    # The decoder takes many utterances at once (one transducer batch), with the same results.
    featurized = [featurizer(clip) for clip in speechlike]
    utterances = [(f.windows, encoder(f.features), f.duration) for f in featurized]
    assert decoder.decode_many(utterances) == expected
    # Several windows in one padded bucket give the same ids (frames, up to rounding) as each alone.
    features = [featurizer(clip).features[0] for clip in speechlike]
    together, alone = encoder(features), [encoder([f])[0] for f in features]
    assert all(a.shape == b.shape and np.allclose(a, b, rtol=0, atol=1e-5) for a, b in zip(together, alone))


def test_long_audio_is_split_and_merged(model, small_checkpoint, speechlike) -> None:
    featurizer, encoder, decoder = stages(small_checkpoint.directory, Buckets((1, 4), (150,)))
    audio = np.concatenate(speechlike * 3)
    featurized = featurizer(audio)
    assert len(featurized.windows) > 2 and max(len(f) for f in featurized.features) <= 150
    transcript = run(featurizer, encoder, decoder, audio)
    assert transcript.duration == pytest.approx(len(audio) / 16000)
    starts = [word.start for word in transcript.words]
    assert starts == sorted(starts)


def test_empty_and_tiny_audio_give_empty_transcripts(small_checkpoint) -> None:
    featurizer, encoder, decoder = stages(small_checkpoint.directory, Buckets((1,), (200,)))
    for audio in (np.zeros(0, np.float32), np.zeros(100, np.float32), np.full(48000, 5e-5, np.float32)):
        transcript = run(featurizer, encoder, decoder, audio)
        assert transcript.text == "" and transcript.words == []


def test_encoder_rejects_windows_its_buckets_cannot_hold(small_checkpoint) -> None:
    encoder = Encoder.from_pretrained(small_checkpoint.directory, Buckets((1,), (200,)), compile=False)
    with pytest.raises(ValueError, match="buckets hold 1 to 200"):
        encoder([np.zeros((201, 80), np.float32)])
    with pytest.raises(ValueError, match=r"\(frames, 80\)"):
        encoder([np.zeros((20, 64), np.float32)])


@pytest.mark.parametrize(
    ("lengths", "most", "sizes"),
    [
        ([100] * 8, 8, [8]),  # like lengths: the fewest batches
        ([100] * 3, 2, [2, 1]),  # the larger batch first
        ([1500, 1450, 300, 250], 8, [2, 2]),  # unlike ones: padding the short ones to 1500 costs more than a batch
        ([1500, 1450, 1400, 1350], 8, [4]),  # the padding saved would cost less than a batch
        ([], 8, []),
    ],
)
def test_windows_of_unlike_lengths_go_in_batches_of_like_ones(lengths, most, sizes) -> None:
    assert like_length_batches(lengths, most, batch_cost=400) == sizes


def test_an_eager_cpu_encoder_batches_like_lengths_and_fixed_shapes_the_largest_batches(small_checkpoint) -> None:
    """Windows in the order a Serve replica gets them: the plan sorts them longest first, then splits by length
    eager on cpu; compiled, the buckets' fixed shapes pad every batch anyway, so it fills the largest batches."""
    frames = [300, 1500, 250, 1450]
    buckets = Buckets((1, 4), (400, 1600))
    features = [np.zeros((count, 80), np.float32) for count in frames]
    eager = Encoder.from_pretrained(small_checkpoint.directory, buckets)
    assert eager.plan(features) == [([1, 3], (2, 1500)), ([0, 2], (2, 300))]
    assert eager.fill_ratio(features) == sum(frames) / (2 * 1500 + 2 * 300)
    fixed = Encoder.from_pretrained(small_checkpoint.directory, buckets)
    fixed.fixed_shapes = True  # as compile sets it, without compiling
    assert fixed.plan(features) == [([1, 3, 0, 2], (4, 1600))]


def test_batches_run_side_by_side_give_the_same_outputs(small_checkpoint, speechlike) -> None:
    """Three batches (batch size 1) on two threads, one torch thread each, as the batch job's CPU encoder runs."""
    buckets = Buckets((1,), (200, 400))
    featurizer, one_at_a_time, _ = stages(small_checkpoint.directory, buckets)
    side_by_side = Encoder.from_pretrained(small_checkpoint.directory, buckets, threads=2)
    features = [featurizer(clip).features[0] for clip in speechlike]
    threads = torch.get_num_threads()
    try:
        pairs = zip(side_by_side(features, [False, True, False]), one_at_a_time(features, [False, True, False]))
        assert all(np.array_equal(a, b) for a, b in pairs)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize(
    ("windows", "batches", "torch_threads"),
    [(1, [1], [4]), (2, [1, 1], [2, 2]), (3, [1, 1, 1], [2, 1, 1]), (8, [2, 2, 2, 2], [1, 1, 1, 1])],
)
def test_an_eager_call_is_cut_into_a_batch_per_thread_each_on_its_share(
    small_checkpoint, monkeypatch, windows, batches, torch_threads
) -> None:
    """With 4 threads: one window runs on all four torch threads, two side by side on two each, three on two, one
    and one, eight in four batches of two on one each; never more than the buckets' largest batch."""
    encoder = Encoder.from_pretrained(small_checkpoint.directory, Buckets((1, 8), (200, 400)), threads=4)
    features = [np.zeros((100, encoder.mels), np.float32)] * windows
    assert [len(group) for group, _ in encoder.plan(features)] == batches
    set_in_thread, seen = {}, []  # torch's thread count is each thread's own: what each batch's thread set last
    set_num_threads, run = torch.set_num_threads, encoder._run

    def recorded_set(threads: int) -> None:
        set_in_thread[threading.get_ident()] = threads
        set_num_threads(threads)

    def recorded_run(padded, lengths, scored):
        seen.append(set_in_thread[threading.get_ident()])
        return run(padded, lengths, scored)

    monkeypatch.setattr(torch, "set_num_threads", recorded_set)
    monkeypatch.setattr(encoder, "_run", recorded_run)
    before = torch.get_num_threads()
    try:
        assert len(encoder(features)) == windows
    finally:
        set_num_threads(before)
    assert sorted(seen, reverse=True) == torch_threads
    assert [len(group) for group, _ in encoder.plan(features[:1] * 64)] == [8] * 8


@pytest.mark.slow
@pytest.mark.parametrize("threads", [None, 2])
def test_compiled_encoder_matches_eager_and_never_recompiles_after_warm_up(
    small_checkpoint, speechlike, threads
) -> None:
    """With threads too (a Serve replica's on cpu with `compile`): a thread count that changed between calls would
    compile every bucket again."""
    buckets = Buckets((1, 2), (200, 400))
    featurizer, eager, _ = stages(small_checkpoint.directory, buckets)
    compiled = Encoder.from_pretrained(small_checkpoint.directory, buckets, compile=True, threads=threads)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # not the count calls run on, if they have their own
        compiled.warm_up()
        frames_compiled = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        features = [featurizer(clip).features[0] for clip in speechlike]
        for batch in ([features[0]], features[:2], features[1:], [features[2]]):
            assert all(np.array_equal(a, b) for a, b in zip(compiled(batch), eager(batch)))
    finally:
        torch.set_num_threads(before)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == frames_compiled


def test_transducer_decoder_gives_no_tokens_for_a_window_never_encoded(small_tdt_checkpoint, speechlike) -> None:
    """A silent stream window is not encoded (streaming passes an empty int array): it decodes to nothing, also
    beside encoded windows in the same call."""
    featurizer, encoder, decoder = stages(small_tdt_checkpoint.directory, Buckets((1, 4), (300,)))
    featurized = featurizer(speechlike[0])
    [frames] = encoder(featurized.features[:1])
    window = Window(0, 0, math.inf)
    assert decoder.spans(window, NOTHING_ENCODED) == []
    alone = decoder.decode_many([([window], [frames], 1.0)])[0]
    together = decoder.decode_many([([window], [NOTHING_ENCODED], 1.0), ([window], [frames], 1.0)])
    assert together[0].text == "" and together[1] == alone
