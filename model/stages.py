"""The three stages of transcription as plain classes, and the pipeline that runs them in one process.

    Featurizer (CPU)      audio -> windows of normalised log-mel features (model.windows cuts them)
    Encoder (GPU or CPU)  feature windows -> per-frame best CTC ids (or, for a request that searches, each frame's
                          best log-probs: model.beam), or a transducer's projected encoder frames, batched:
                          fixed-shape buckets when compiled, padded to the longest window when eager
    Decoder (CPU)         an utterance's encoded windows -> Transcript (CTC collapse or beam search, or the
                          transducer's greedy loop: prediction network + joint, batched over all windows it is
                          given, or its beam search), its windows' tokens joined at their seams (model.windows);
                          a request's DecodingOptions choose greedy or beam, hotwords and language model

`Pipeline` runs the three in one process: `Parakeet.transcribe` and the CLI use it. The Serve app and the batch job
run these same classes, each stage in its own actors, so every runner cuts the same windows, joins the same seams
and gives the same text for the same audio, of any length, with accelerator memory bounded by the largest bucket.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from model import checkpoint
from model.audio import SAMPLE_RATE, AudioError, AudioSource, load_audio
from model.beam import CTCBeamSearch, LanguageModelError, WordLM, frame_scores, is_frame_scores, transducer_beam_search
from model.biasing import ContextGraph
from model.config import ConfigError, FeatureConfig, FrameTiming, ModelConfig, RNNTConfig
from model.decoding import (
    GREEDY,
    DecodingOptions,
    TokenSpan,
    Transcript,
    greedy_transducer,
    token_spans,
    transcript_from_spans,
)
from model.features import LogMelFeatures
from model.heads import Network, ParakeetCTC, TransducerDecoder
from model.tokenizer import Tokenizer
from model.windows import (
    DEFAULT_CONTEXT_SECONDS,
    SEAM_REACH_SECONDS,
    SEAM_TOLERANCE_SECONDS,
    Window,
    plan_windows,
    tokens_to_keep,
)

SILENCE_PEAK = 1e-4  # -80 dBFS: audio that never reaches it is silence, transcribed as "" without the model
NOTHING_ENCODED = np.empty(0, np.float32)  # the encoder output of a window that was never encoded (silent)
GRAPHS_KEPT = 64  # hotword lists a Decoder keeps built
# What one more batch costs an eager CPU encoder beside its frames, in padded frames of one row: the dispatch of every
# op of the network. Calls of 8 windows of 2-15 s, as a Serve Encoder replica gets them, took within 6% of the same
# time with 100 to 800, 400 the least (python bench/encoder_batches.py --batch-cost N; BENCHMARKS.md), and 1.35x less
# than in one padded batch each.
BATCH_COST_FRAMES = 400


def like_length_batches(lengths: list[int], most: int, batch_cost: int = BATCH_COST_FRAMES) -> list[int]:
    """Window lengths, longest first -> the sizes of the consecutive batches (of at most `most`) that cost least,
    a batch costing `batch_cost` plus its rows padded to its first (longest) window. Ties go to the earlier batches
    being the larger."""
    least = [0] + [math.inf] * len(lengths)  # least[end]: the cost of the first `end` windows
    last_size = [0] * (len(lengths) + 1)  # the size of the last batch of that cheapest plan
    for end in range(1, len(lengths) + 1):
        for start in range(end - 1, max(0, end - most) - 1, -1):
            cost = least[start] + batch_cost + (end - start) * lengths[start]
            if cost < least[end]:
                least[end], last_size[end] = cost, end - start
    sizes, end = [], len(lengths)
    while end:
        sizes.append(last_size[end])
        end -= last_size[end]
    return sizes[::-1]


def default_dtype(device: str) -> torch.dtype:
    """bfloat16 on GPUs (same accuracy, twice the speed), float32 on CPUs (bfloat16 is slow there)."""
    return torch.bfloat16 if device == "cuda" else torch.float32


@dataclass(frozen=True)
class Buckets:
    """The (batch size, feature frames) shapes the encoder runs; frames are 10 ms feature frames. The largest frame
    count is the longest window: longer audio is cut into windows."""

    batch_sizes: tuple[int, ...] = (1, 4, 8)
    frame_counts: tuple[int, ...] = (1000, 2000, 3000)  # 10, 20 and 30 s windows

    def __post_init__(self) -> None:
        for name in ("batch_sizes", "frame_counts"):
            values = getattr(self, name)
            if not values or any(v <= 0 for v in values) or list(values) != sorted(set(values)):
                raise ValueError(f"bucket {name} must be distinct positive numbers in increasing order, got {values}")

    @property
    def max_batch_size(self) -> int:
        return self.batch_sizes[-1]

    @property
    def max_frames(self) -> int:
        return self.frame_counts[-1]

    def shape_for(self, count: int, frames: int) -> tuple[int, int]:
        """The smallest bucket holding `count` windows of up to `frames` frames."""
        batch = next(b for b in self.batch_sizes if b >= count)
        return batch, next(f for f in self.frame_counts if f >= frames)

    def shapes(self) -> list[tuple[int, int]]:
        return [(b, f) for b in self.batch_sizes for f in self.frame_counts]


def check_position_table(config: ModelConfig, feature_config: FeatureConfig, buckets: Buckets) -> None:
    """Raise ConfigError unless the largest window fits the encoder's position table."""
    frames = math.ceil(buckets.max_frames / config.encoder_config.subsampling_factor)
    limit = config.encoder_config.max_position_embeddings
    if frames > limit:
        seconds = limit * FrameTiming.of(feature_config, config.encoder_config).seconds
        raise ConfigError(
            f"the largest window ({buckets.max_frames} feature frames) gives {frames} encoder frames; "
            f"this model's position table holds {limit} (about {seconds:.0f} s): choose frame_counts "
            f"of at most {limit * config.encoder_config.subsampling_factor}"
        )


@dataclass
class FeaturizedAudio:
    features: list[np.ndarray]  # one (frames, mels) float32 array per window
    windows: list[Window]
    duration: float  # seconds


class Featurizer:
    """Encoded audio or waveforms -> windows of log-mel features, sized for the encoder's largest bucket."""

    def __init__(
        self,
        feature_config: FeatureConfig,
        timing: FrameTiming,
        max_frames: int,
        context_seconds: float = DEFAULT_CONTEXT_SECONDS,
    ) -> None:
        self.features = LogMelFeatures(feature_config)
        self.timing = timing
        self.window_samples = max_frames * feature_config.hop_length
        self.context_samples = timing.frames(context_seconds) * timing.samples

    @classmethod
    def from_pretrained(
        cls, model: str | os.PathLike | None, max_frames: int, context_seconds: float = DEFAULT_CONTEXT_SECONDS
    ) -> Featurizer:
        config, feature_config = checkpoint.read_configs(checkpoint.resolve(model))
        return cls(feature_config, FrameTiming.of(feature_config, config.encoder_config), max_frames, context_seconds)

    def __call__(
        self,
        audio: AudioSource,
        sample_rate: int = SAMPLE_RATE,
        name: str | None = None,
        max_seconds: float | None = None,
    ) -> FeaturizedAudio:
        """Raises AudioError for audio that cannot be decoded, AudioTooLongError for audio over `max_seconds`;
        audio too short for a frame, or silent, gives no windows."""
        waveform = load_audio(audio, sample_rate, name, allow_empty=True, max_seconds=max_seconds)
        duration = len(waveform) / SAMPLE_RATE
        if not self.holds_speech(waveform):
            return FeaturizedAudio([], [], duration)
        features, windows = [], []
        for start, end, window in plan_windows(
            len(waveform), self.timing.samples, self.window_samples, self.context_samples
        ):
            features.append(self.window_features(waveform[start:end]))
            windows.append(window)
        return FeaturizedAudio(features, windows, duration)

    def holds_speech(self, waveform: np.ndarray) -> bool:
        """False for audio too short for a frame pair, or silent: it is transcribed as "" without the model."""
        return len(waveform) >= self.features.min_samples and float(np.abs(waveform).max()) >= SILENCE_PEAK

    def window_features(self, waveform: np.ndarray) -> np.ndarray:
        """One window's 16 kHz waveform -> its normalised (frames, mels) log-mel features."""
        return self.features.one(torch.from_numpy(waveform)).numpy()


class Encoder:
    """Feature windows -> per-frame best CTC ids (int32; for a window whose request searches, `frame_scores`), or
    a transducer's projected encoder frames (float32, one row per frame), in batches of up to the buckets' largest
    batch size, longest windows first.

    Compiled, it runs only the buckets' fixed (batch, frames) shapes, so the compiled model never recompiles; on
    CUDA in `dtype` with CUDA graphs ("reduce-overhead"), on CPU through inductor. Eager, a batch is padded only
    to its longest window: fixed shapes would buy nothing but padding.

    With `threads` (on CPU: the cores it may use) an eager call's batches run side by side, as many at once as there
    are threads, each on its share of them (the network keeps no state between calls): one batch on all of them, two
    on half each, as many as there are threads on one each; eager, a call is cut into at least that many batches.
    On cores shared with other work that is faster than one batch at a time on torch's threads, whose every op
    waits for the slowest (BENCHMARKS.md, the batch job and the Serve app). Without, batches run one at a time on
    the process's torch threads."""

    def __init__(
        self,
        network: Network,
        buckets: Buckets,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        compile: bool = False,
        threads: int | None = None,
    ) -> None:
        self.buckets = buckets
        self.device = torch.device(device)
        self.dtype = dtype
        self.network = network.to(self.device, dtype).eval()
        self.mels = network.config.encoder_config.num_mel_bins
        self.ctc = isinstance(network, ParakeetCTC)
        self.blank_id = network.config.blank_id
        self.fixed_shapes = compile
        self.use_threads(threads)
        self._forward = self.network
        if compile:
            torch._dynamo.config.cache_size_limit = max(
                torch._dynamo.config.cache_size_limit, 2 * len(buckets.shapes())
            )
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            # One static graph per bucket, as the reference's fixed-shape recipe compiles: no symbolic shapes to
            # guard, and on CUDA each bucket replays its own recorded graph.
            self._forward = torch.compile(self.network, dynamic=False, mode=mode)

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike | None,
        buckets: Buckets,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        compile: bool = False,
        threads: int | None = None,
    ) -> Encoder:
        directory = checkpoint.resolve(model)
        config, feature_config = checkpoint.read_configs(directory)
        check_position_table(config, feature_config, buckets)
        return cls(checkpoint.read_network(directory, config), buckets, device, dtype, compile, threads)

    def use_threads(self, threads: int | None) -> None:
        """Run on `threads` CPU threads from now on (None: one batch at a time on the process's torch threads).
        Compiled, one batch at a time on all of them: inductor's CPU graphs are specialised to torch's thread count,
        so a count that changed between calls would compile every bucket again."""
        if threads is not None and threads < 1:
            raise ValueError(f"an encoder needs at least one thread, got {threads}")
        self.threads = threads
        side_by_side = threads and threads > 1 and not self.fixed_shapes
        self._pool = ThreadPoolExecutor(threads, "encoder") if side_by_side else None

    def warm_up(self) -> None:
        """Run every bucket once (twice for CUDA graphs to record), on the torch threads calls run on, so no
        request pays for compilation."""
        if self.threads:
            torch.set_num_threads(self.threads)
        for batch, frames in self.buckets.shapes():
            for _ in range(2 if self.device.type == "cuda" else 1):
                self._run(np.zeros((batch, frames, self.mels), np.float32), np.full(batch, frames))

    @torch.inference_mode()
    def _run(self, features: np.ndarray, lengths: np.ndarray, scored: list[bool] | None = None) -> list[np.ndarray]:
        """A padded batch -> each row's output; CTC rows marked in `scored` get frame scores, not best ids."""
        output, output_lengths = self._forward(
            torch.from_numpy(features).to(self.device, self.dtype), torch.from_numpy(lengths).to(self.device)
        )
        lengths = output_lengths.cpu().tolist()
        if not self.ctc:  # a transducer's decoder needs the frames themselves
            return [row[:length] for row, length in zip(output.float().cpu().numpy(), lengths)]
        # Greedy CTC needs only the best id per frame; a beam search each frame's best few log-probs.
        best = output.argmax(dim=-1).to(torch.int32).cpu().numpy()
        scores = frame_scores(output, self.blank_id).cpu().numpy() if scored and any(scored) else None
        return [(scores if scored and scored[row] else best)[row, :length] for row, length in enumerate(lengths)]

    def check(self, features: np.ndarray) -> None:
        """Reject a window the buckets cannot hold, before it can spoil a batch."""
        if not isinstance(features, np.ndarray) or features.ndim != 2 or features.shape[1] != self.mels:
            shape = getattr(features, "shape", type(features).__name__)
            raise ValueError(f"features must be a (frames, {self.mels}) array, got {shape}")
        if not 0 < len(features) <= self.buckets.max_frames:
            raise ValueError(f"a window has {len(features)} frames; the buckets hold 1 to {self.buckets.max_frames}")

    def shape_for(self, count: int, frames: int) -> tuple[int, int]:
        """The padded (batch, frames) shape that `count` windows of up to `frames` frames run in."""
        return self.buckets.shape_for(count, frames) if self.fixed_shapes else (count, frames)

    def plan(self, windows: list[np.ndarray]) -> list[tuple[list[int], tuple[int, int]]]:
        """The batches `windows` run in: each one's window indices (longest first, at most the largest batch size)
        and its padded (batch, frames) shape. Eager on cpu, windows of unlike lengths go in batches of like ones
        where the padding that saves costs more than a batch (like_length_batches); fixed shapes, or on an
        accelerator, where a batch's fixed cost is far more, in batches of the largest size."""
        order = sorted(range(len(windows)), key=lambda i: -len(windows[i]))
        size = self.buckets.max_batch_size
        if self.threads and not self.fixed_shapes:  # a batch for each thread, where there are windows enough
            size = max(1, min(size, math.ceil(len(order) / self.threads)))
        if self.fixed_shapes or self.device.type != "cpu":
            counts = [min(size, len(order) - start) for start in range(0, len(order), size)]
        else:
            counts = like_length_batches([len(windows[index]) for index in order], size)
        starts = itertools.accumulate(counts, initial=0)
        groups = [order[start : start + count] for start, count in zip(starts, counts)]
        return [(group, self.shape_for(len(group), len(windows[group[0]]))) for group in groups]

    def __call__(self, windows: list[np.ndarray], scored: list[bool] | None = None) -> list[np.ndarray]:
        """Windows of (frames, mels) features -> their encoder output (best ids, frame scores for the windows
        `scored` marks, or frames), in order."""
        for features in windows:
            self.check(features)
        results: list[np.ndarray] = [NOTHING_ENCODED] * len(windows)
        plan = self.plan(windows)
        run = functools.partial(self._run_batch, windows, scored)
        shares = self.thread_shares(len(plan))
        batches = self._pool.map(run, shares, plan) if self._pool and len(plan) > 1 else map(run, shares, plan)
        for (group, _), outputs in zip(plan, batches):
            for index, encoded in zip(group, outputs):
                results[index] = encoded
        return results

    def thread_shares(self, batches: int) -> list[int | None]:
        """The torch threads each of a call's batches runs on: the encoder's threads shared among as many as run at
        once (the longest batches, first in the plan, take the odd ones), one each beyond that; all of them for
        each batch in turn when compiled; None without threads (the process's torch threads as they are)."""
        if not self.threads or self.fixed_shapes:
            return [self.threads] * batches
        at_once = min(self.threads, batches)
        return [self.threads // at_once + (batch < self.threads % at_once) for batch in range(batches)]

    def _run_batch(
        self,
        windows: list[np.ndarray],
        scored: list[bool] | None,
        torch_threads: int | None,
        batch: tuple[list[int], tuple[int, int]],
    ) -> list[np.ndarray]:
        """One batch of the plan, on `torch_threads` of this thread's own (None: as they are): its windows'
        outputs, in the group's order."""
        if torch_threads is not None:
            torch.set_num_threads(torch_threads)  # OpenMP's thread count is each thread's own
        group, (size, frames) = batch
        padded = np.zeros((size, frames, self.mels), np.float32)
        lengths = np.full(size, frames)  # filler rows are full length so their masks stay well-formed
        for row, index in enumerate(group):
            padded[row, : len(windows[index])] = windows[index]
            lengths[row] = len(windows[index])
        rows_scored = [bool(scored and scored[index]) for index in group] + [False] * (size - len(group))
        return self._run(padded, lengths, rows_scored)[: len(group)]

    def encode_isolating_failures(
        self, requests: list[list[np.ndarray]], scored: list[bool] | None = None
    ) -> list[list[np.ndarray] | Exception]:
        """The windows of several requests (or rows), all encoded together (frame scores for the requests `scored`
        marks); if that fails, each request's alone, so one bad request cannot fail the others it shares a call
        with: its place holds its exception."""
        scored = scored or [False] * len(requests)
        try:
            windows_scored = [flag for windows, flag in zip(requests, scored) for _ in windows]
            encoded = iter(self([window for windows in requests for window in windows], windows_scored))
            return [[next(encoded) for _ in windows] for windows in requests]
        except Exception:
            results: list[list[np.ndarray] | Exception] = []
            for windows, flag in zip(requests, scored):
                try:
                    results.append(self(windows, [flag] * len(windows)))
                except Exception as err:
                    results.append(err)
            return results

    def fill_ratio(self, windows: list[np.ndarray]) -> float:
        """Share of the padded batches' frames that real frames fill (1.0: no padding at all)."""
        padded = sum(batch * frames for _, (batch, frames) in self.plan(windows))
        return sum(len(w) for w in windows) / padded


class Decoder:
    """Encoded windows of utterances -> their Transcripts: CTC best ids collapsed or frame scores beam-searched,
    or the transducer's greedy loop over projected encoder frames (all greedy windows of all utterances given at
    once decode as one batch) or its beam search; words timed. Each utterance decodes with its own
    DecodingOptions."""

    def __init__(self, tokenizer: Tokenizer, timing: FrameTiming, transducer: TransducerDecoder | None = None) -> None:
        self.tokenizer = tokenizer
        self.timing = timing
        self.transducer = transducer.eval() if transducer is not None else None
        # Built once per hotword list (requests often repeat a deployment's) and language model; thread-safe.
        self._graph = functools.lru_cache(maxsize=GRAPHS_KEPT)(functools.partial(ContextGraph.build, tokenizer))
        self._lm = functools.lru_cache(maxsize=4)(WordLM)

    def check(self, options: DecodingOptions) -> None:
        """Raise HotwordError for hotwords the tokenizer cannot spell, LanguageModelError for a language model that
        cannot load or a transducer's: before any work."""
        self.context_graph(options)
        self.language_model(options)

    def context_graph(self, options: DecodingOptions) -> ContextGraph | None:
        return self._graph(options.hotwords) if options.hotwords else None

    def language_model(self, options: DecodingOptions) -> WordLM | None:
        if options.lm_path is None:
            return None
        if self.transducer is not None:
            raise LanguageModelError("a word language model scores CTC beam search only; this model is a transducer")
        return self._lm(options.lm_path, options.lm_alpha, options.lm_beta)

    @classmethod
    def from_pretrained(cls, model: str | os.PathLike | None) -> Decoder:
        directory = checkpoint.resolve(model)
        config, feature_config = checkpoint.read_configs(directory)
        transducer = checkpoint.read_transducer_decoder(directory, config) if isinstance(config, RNNTConfig) else None
        return cls(
            checkpoint.read_tokenizer(directory, config),
            FrameTiming.of(feature_config, config.encoder_config),
            transducer,
        )

    def __call__(
        self, windows: list[Window], encoded: list[np.ndarray], duration: float, options: DecodingOptions = GREEDY
    ) -> Transcript:
        return self.decode_many([(windows, encoded, duration)], [options])[0]

    def decode_many(
        self,
        utterances: list[tuple[list[Window], list[np.ndarray], float]],
        options: list[DecodingOptions] | None = None,
    ) -> list[Transcript]:
        """(windows, their encoder outputs, duration in seconds) per utterance -> one Transcript each, decoded with
        its `options` (default: greedy)."""
        options = options or [GREEDY] * len(utterances)
        windows = [window for utterance_windows, _, _ in utterances for window in utterance_windows]
        outputs = [output for _, utterance_outputs, _ in utterances for output in utterance_outputs]
        window_options = [option for (w, _, _), option in zip(utterances, options) for _ in w]
        spans = iter(self._spans(outputs, [window.offset for window in windows], window_options))
        transcripts = []
        for utterance_windows, _, duration in utterances:
            kept: list[TokenSpan] = []
            for window in utterance_windows:
                kept += self.join(kept, next(spans), window)
            transcripts.append(self.transcript(kept, duration))
        return transcripts

    def join(self, kept: list[TokenSpan], spans: list[TokenSpan], window: Window) -> list[TokenSpan]:
        """Of one window's tokens, those that follow `kept`, the tokens kept from the windows before it: its own
        part's, aligned at its seam (model.windows) so that none is doubled or dropped there."""
        return tokens_to_keep(
            kept,
            spans,
            window,
            self.timing.frames(SEAM_REACH_SECONDS),
            self.timing.frames(SEAM_TOLERANCE_SECONDS),
            0 if self.transducer else 1,
        )

    def spans(self, window: Window, encoded: np.ndarray, options: DecodingOptions = GREEDY) -> list[TokenSpan]:
        """Every token of one window (`encoded`: its encoder output, or NOTHING_ENCODED), its frames counted from
        the start of the audio."""
        return self._spans([encoded], [window.offset], [options])[0]

    def transcript(self, spans: list[TokenSpan], duration: float) -> Transcript:
        return transcript_from_spans(spans, self.tokenizer, self.timing.seconds, duration)

    def _spans(
        self, outputs: list[np.ndarray], offsets: list[int], options: list[DecodingOptions]
    ) -> list[list[TokenSpan]]:
        """Each window's token spans, in frames from the start of the audio (the window's own start is `offset`)."""
        if self.transducer is None:
            return [self._ctc_spans(*window) for window in zip(outputs, offsets, options)]
        spans: list[list[TokenSpan]] = [[] for _ in outputs]
        # A window with no frames (silent, so never encoded: an empty array of any shape) has no tokens.
        rows = [row for row, output in enumerate(outputs) if len(output)]
        searched = [row for row in rows if options[row].beam_size > 1]
        for row in searched:
            graph = self.context_graph(options[row])
            emissions = transducer_beam_search(
                self.transducer, torch.from_numpy(outputs[row]), options[row].beam_size, graph
            )
            spans[row] = [emission.span(offsets[row]) for emission in emissions]
        rows = [row for row in rows if options[row].beam_size == 1]
        if not rows:
            return spans
        lengths = torch.tensor([len(outputs[row]) for row in rows])
        padded = torch.zeros(len(rows), int(lengths.max()), outputs[rows[0]].shape[1])
        for index, row in enumerate(rows):
            padded[index, : len(outputs[row])] = torch.from_numpy(outputs[row])
        graphs = [self.context_graph(options[row]) for row in rows]
        for row, emissions in zip(rows, greedy_transducer(self.transducer, padded, lengths, graphs)):
            spans[row] = [emission.span(offsets[row]) for emission in emissions]
        return spans

    def _ctc_spans(self, output: np.ndarray, offset: int, options: DecodingOptions) -> list[TokenSpan]:
        if not len(output):
            return []
        if not options.searches:
            return token_spans(output.tolist(), self.tokenizer.blank_id, offset)
        if not is_frame_scores(output):
            raise ValueError("beam search needs the encoder's frame scores; it was sent best ids (scored=False)")
        search = CTCBeamSearch(
            self.tokenizer, options.beam_size, self.context_graph(options), self.language_model(options)
        )
        return search(output, offset)


PIPELINE_GROUP_WINDOWS = 32  # windows featurized before they are encoded together: bounds the features held at once


class Pipeline:
    """The three stages in one process: audio sources -> Transcripts, in order.

    Inputs are featurized a group at a time (about PIPELINE_GROUP_WINDOWS windows), the group's windows encoded
    together, longest first, and decoded; so batching spans inputs, and memory stays bounded for any number of
    inputs of any length."""

    def __init__(self, featurizer: Featurizer, encoder: Encoder, decoder: Decoder) -> None:
        self.featurizer, self.encoder, self.decoder = featurizer, encoder, decoder

    def transcribe_each(
        self,
        sources: Iterable[tuple[AudioSource, str]],
        sample_rate: int = SAMPLE_RATE,
        options: DecodingOptions = GREEDY,
    ) -> Iterator[Transcript | AudioError]:
        """(source, name) pairs -> one result each, in order, as soon as its group is done: its Transcript, or the
        AudioError (naming it) that its audio raised; all decoded with `options`."""
        self.decoder.check(options)
        group: list[FeaturizedAudio | AudioError] = []
        windows = 0
        for source, name in sources:
            try:
                group.append(self.featurizer(source, sample_rate, name))
                windows += len(group[-1].features)
            except AudioError as err:
                group.append(err)
            if windows >= PIPELINE_GROUP_WINDOWS:
                yield from self._finish(group, options)
                group, windows = [], 0
        yield from self._finish(group, options)

    def _finish(
        self, group: list[FeaturizedAudio | AudioError], options: DecodingOptions
    ) -> Iterator[Transcript | AudioError]:
        featurized = [item for item in group if isinstance(item, FeaturizedAudio)]
        windows = [features for item in featurized for features in item.features]
        encoded = iter(self.encoder(windows, [options.searches] * len(windows)))
        utterances = [(item.windows, [next(encoded) for _ in item.features], item.duration) for item in featurized]
        transcripts = iter(self.decoder.decode_many(utterances, [options] * len(utterances)))
        for item in group:
            yield item if isinstance(item, AudioError) else next(transcripts)
