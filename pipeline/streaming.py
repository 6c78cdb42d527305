"""Streaming transcription with an offline (full-context) model, by buffered inference.

Each step encodes a window of left context + new chunk(s) + look-ahead and commits only the tokens that start in
the new chunks, aligned at the seam with those committed before (model.windows): the rule of the long-audio
windows (model.windows), so every token is committed once, by a window that saw it with context on both sides.
Tokens after the committed part are a partial that may change.

    Stream     PCM buffer and window planning: feed() audio, next_window(), featurize(), accept() encoder output
    Committer  each window's tokens -> events: whole words as `final`, the uncommitted tail as `partial`, then `done`

Neither knows how the encoder runs: the Serve ingress sends each window through the Encoder deployment (so the
windows of many streams share batches), the tests through a local Encoder.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from model.audio import SAMPLE_RATE
from model.config import FrameTiming
from model.decoding import GREEDY, DecodingOptions, TokenSpan
from model.stages import NOTHING_ENCODED, Decoder, Featurizer
from model.windows import Window

Event = dict[str, Any]  # one JSON message of the protocol: {"type": "partial" | "final" | "done" | "error", ...}


class StreamError(ValueError):
    """The client broke the protocol or its limits; the message says how."""


@dataclass(frozen=True)
class StreamSettings:
    """Seconds of new audio committed per step, of audio before it and after it that each step re-encodes."""

    chunk_seconds: float = 0.8
    left_context_seconds: float = 7.6  # with the rest, a 10 s window: it fills the default 10 s bucket exactly
    lookahead_seconds: float = 1.6

    def frames(self, timing: FrameTiming) -> tuple[int, int, int]:
        """(chunk, left context, look-ahead) in whole encoder frames."""
        return (
            timing.frames(self.chunk_seconds),
            timing.frames(self.left_context_seconds),
            timing.frames(self.lookahead_seconds),
        )

    def check(self, timing: FrameTiming, max_window_seconds: float) -> None:
        """Raise StreamError, naming the setting, unless every window of these settings fits the encoder's buckets."""
        for name, value in asdict(self).items():
            if not math.isfinite(value) or value < 0:
                raise StreamError(f"{name} must be a non-negative number of seconds, got {value}")
        chunk, left, ahead = self.frames(timing)
        if chunk < 1:
            raise StreamError(
                f"chunk_seconds must be at least one encoder frame ({timing.seconds:g} s), got {self.chunk_seconds}"
            )
        if left < 1:  # a token whose frames run across a seam is then seen starting inside the next chunk too
            raise StreamError(
                f"left_context_seconds must be at least one encoder frame ({timing.seconds:g} s), "
                f"got {self.left_context_seconds}"
            )
        if (chunk + left + ahead) * timing.seconds > max_window_seconds + 1e-9:
            raise StreamError(
                f"chunk_seconds + left_context_seconds + lookahead_seconds must be at most "
                f"{max_window_seconds:g} s (the encoder's largest window), got "
                f"{(chunk + left + ahead) * timing.seconds:g} s"
            )


@dataclass(frozen=True)
class StreamWindow:
    window: Window  # encoder frames from the start of the stream
    audio: np.ndarray  # its 16 kHz samples
    end_seconds: float  # where it ends in the stream


class Committer:
    """Tokens of windows given in stream order -> protocol events; committed words are never revised.

    A word is final once the next word has begun, so a word whose pieces straddle two steps is sent whole."""

    def __init__(self, decoder: Decoder, options: DecodingOptions = GREEDY) -> None:
        self.decoder = decoder
        self.options = options
        self.committed: list[TokenSpan] = []
        self.sent = 0  # committed tokens already in final events

    def commit(self, window: Window, encoded: np.ndarray) -> tuple[Event | None, str]:
        """A window's encoder output -> a final event for the words it completes (or None), and the partial text:
        the committed tokens not yet final and those after the committed part."""
        spans = self.decoder.spans(window, encoded, self.options)
        self.committed += self.decoder.join(self.committed, spans, window)
        if window.keep_end == math.inf:
            final = self._final(len(self.committed))
        else:
            starts = [
                i
                for i in range(self.sent + 1, len(self.committed))
                if self.decoder.tokenizer.starts_word(self.committed[i].token_id)
            ]
            final = self._final(starts[-1]) if starts else None
        tail = self.committed[self.sent :] + [span for span in spans if span.start >= window.keep_end]
        return (final if final and final["words"] else None), self.decoder.transcript(tail, 0.0).text

    def _final(self, upto: int) -> Event:
        transcript = self.decoder.transcript(self.committed[self.sent : upto], 0.0)
        self.sent = upto
        return {"type": "final", "text": transcript.text, "words": [asdict(word) for word in transcript.words]}

    def done(self) -> Event:
        return {"type": "done", "text": self.decoder.transcript(self.committed, 0.0).text}


class Stream:
    """One live stream: feed() 16 kHz audio as it arrives, then repeatedly take next_window(), encode its
    featurize() output, and accept() the encoder's output, in order; end() when the audio is over.

    When audio has piled up (the encoder was busy) one window commits several chunks, up to the largest window the
    encoder holds, so a stream that fell behind catches up with fewer, larger steps."""

    def __init__(
        self,
        featurizer: Featurizer,
        decoder: Decoder,
        settings: StreamSettings,
        max_backlog_seconds: float = math.inf,
        max_seconds: float = math.inf,
        options: DecodingOptions = GREEDY,
    ) -> None:
        self.frame_samples = featurizer.timing.samples
        settings.check(featurizer.timing, featurizer.window_samples / SAMPLE_RATE)
        self.chunk, self.left, self.ahead = settings.frames(featurizer.timing)
        self.max_chunks = (featurizer.window_samples // self.frame_samples - self.left - self.ahead) // self.chunk
        self.featurizer = featurizer
        self.committer = Committer(decoder, options)
        self.max_backlog_samples = max_backlog_seconds * SAMPLE_RATE
        self.max_samples = max_seconds * SAMPLE_RATE
        self.pieces: list[np.ndarray] = []  # the audio still needed, joined only when a window is cut from it
        self.audio_start = 0  # stream sample where the pieces start; earlier audio is no longer needed
        self.received = 0  # samples
        self.committed_frame = 0  # tokens starting before this encoder frame are committed
        self.ended = False  # no more audio will come
        self.finished = False  # all of it is committed

    @property
    def backlog_seconds(self) -> float:
        """Audio received beyond what the next step (one chunk and its look-ahead) needs."""
        needed = (self.committed_frame + self.chunk + self.ahead) * self.frame_samples
        return max(0, self.received - needed) / SAMPLE_RATE

    def feed(self, samples: np.ndarray) -> None:
        """Append 16 kHz float32 samples; raises StreamError when the client is too far ahead of transcription, or
        the stream runs past `max_seconds`."""
        if self.ended:
            raise StreamError("audio arrived after the end of the stream")
        if self.received + len(samples) > self.max_samples:
            raise StreamError(
                f"the stream ran past its limit of {self.max_samples / SAMPLE_RATE:g} s of audio; "
                "open a new session for more"
            )
        self.pieces.append(samples)
        self.received += len(samples)
        if self.backlog_seconds * SAMPLE_RATE > self.max_backlog_samples:
            raise StreamError(
                f"audio is arriving faster than it can be transcribed: {self.backlog_seconds:.1f} s "
                f"are waiting (the limit is {self.max_backlog_samples / SAMPLE_RATE:g} s); "
                f"send in real time"
            )

    def end(self) -> None:
        self.ended = True

    def next_window(self) -> StreamWindow | None:
        """The next window to encode, or None until more audio (or the end) arrives."""
        if self.finished:
            return None
        start = max(0, self.committed_frame - self.left) * self.frame_samples
        if self.ended and self.received - start <= self.featurizer.window_samples:
            keep_end, end = math.inf, self.received  # the rest fits in one window: commit all of it
        else:
            available = self.received // self.frame_samples - self.committed_frame - self.ahead
            chunks = min(available // self.chunk, self.max_chunks)
            if chunks < 1:
                return None
            keep_end = self.committed_frame + chunks * self.chunk
            end = (keep_end + self.ahead) * self.frame_samples
        audio = np.concatenate(self.pieces) if len(self.pieces) != 1 else self.pieces[0]
        self.pieces = [audio]
        window = Window(start // self.frame_samples, self.committed_frame, keep_end)
        return StreamWindow(window, audio[start - self.audio_start : end - self.audio_start], end / SAMPLE_RATE)

    def featurize(self, window: StreamWindow) -> np.ndarray | None:
        """The window's features, or None when it is silent or too short to hold any word (nothing to encode)."""
        return self.featurizer.window_features(window.audio) if self.featurizer.holds_speech(window.audio) else None

    def accept(self, window: StreamWindow, encoded: np.ndarray) -> list[Event]:
        """The encoder's output for `window` (NOTHING_ENCODED when featurize() gave None) -> events to send."""
        final, partial = self.committer.commit(window.window, encoded)
        events = [final] if final else []
        if window.window.keep_end == math.inf:
            self.finished = True
            return events + [self.committer.done()]
        self.committed_frame = int(window.window.keep_end)
        keep_from = max(0, self.committed_frame - self.left) * self.frame_samples
        audio = np.concatenate(self.pieces) if self.pieces else np.empty(0, np.float32)
        self.pieces, self.audio_start = [audio[keep_from - self.audio_start :]], keep_from
        return events + [{"type": "partial", "text": partial, "end": window.end_seconds}]


def run_stream(
    stream: Stream, pieces: Iterator[np.ndarray], encode: Callable[[np.ndarray], np.ndarray]
) -> Iterator[Event]:
    """Drive a stream synchronously: feed each piece, then process every window it completes; end after the last."""
    for piece in pieces:
        stream.feed(piece)
        yield from _drain(stream, encode)
    stream.end()
    yield from _drain(stream, encode)


def _drain(stream: Stream, encode: Callable[[np.ndarray], np.ndarray]) -> Iterator[Event]:
    while (window := stream.next_window()) is not None:
        features = stream.featurize(window)
        yield from stream.accept(window, NOTHING_ENCODED if features is None else encode(features))
