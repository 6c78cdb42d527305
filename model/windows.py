"""Cutting long audio into overlapping windows, and joining the windows' tokens at their seams: the one rule that
in-process transcription, the Serve app, the batch job and streams all follow.

A window keeps the tokens that start in its own part of the audio ([keep_start, keep_end) in encoder frames), but
a model places a token a frame or two differently when it sees different context, and near the end of a window it
may place words late. A token that moves across the seam between two windows would then be kept by both (a doubled
word) or by neither (a dropped one). So a window's tokens are first aligned with the tokens kept before its seam:
the longest common subsequence of the same tokens at nearly the same frames, within SEAM_REACH_SECONDS of the seam.
The window goes on after the last token both agree on; with no agreement (nor when its left context is too short
to hold the last kept token), it keeps its own part.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from model.decoding import TokenSpan

DEFAULT_CONTEXT_SECONDS = 2.0  # audio on each side of a window's kept middle when long audio is windowed
SEAM_REACH_SECONDS = 3.2  # how far before (and after) a seam tokens are aligned
SEAM_TOLERANCE_SECONDS = 0.32  # how far apart the same token may be placed by two windows and still be one


@dataclass(frozen=True)
class Window:
    """Where one encoded window sits in its utterance, in encoder frames from the start of the audio.

    The window keeps the tokens whose first frame lies in [keep_start, keep_end), give or take the tokens that moved
    across its seam (`tokens_to_keep`).
    """

    offset: int
    keep_start: int
    keep_end: float  # math.inf for the last window

    def keeps(self, span: TokenSpan) -> bool:
        return self.keep_start <= span.start < self.keep_end


def plan_windows(
    samples: int, frame_samples: int, window_samples: int, context_samples: int
) -> list[tuple[int, int, Window]]:
    """Cut `samples` into windows of at most `window_samples`, overlapping by `context_samples` on each side.

    The last window is the first whose rest of the audio, left context included, fits in one window: the rule of a
    stream's last window (pipeline.streaming), so a stream with matching settings cuts these same windows.
    Returns (first sample, end sample, Window) per window; all boundaries fall on encoder frames.
    """
    if samples <= window_samples:
        return [(0, samples, Window(0, 0, math.inf))]
    stride = (window_samples - 2 * context_samples) // frame_samples * frame_samples
    if stride <= 0 or context_samples % frame_samples:
        raise ValueError(
            f"context {context_samples} samples must be a multiple of {frame_samples} and leave room in a "
            f"window of {window_samples} samples"
        )
    plan, keep_start, start = [], 0, 0
    while samples - start > window_samples:  # until the rest fits in one window
        keep_end = keep_start + stride
        window = Window(start // frame_samples, keep_start // frame_samples, keep_end // frame_samples)
        plan.append((start, keep_end + context_samples, window))
        keep_start, start = keep_end, max(0, keep_end - context_samples)
    plan.append((start, samples, Window(start // frame_samples, keep_start // frame_samples, math.inf)))
    return plan


def tokens_to_keep(
    kept: list[TokenSpan], spans: list[TokenSpan], window: Window, reach: int, tolerance: int, spacing: int
) -> list[TokenSpan]:
    """The tokens of one window (`spans`, all of them, in order) that follow `kept`, the tokens of the windows
    before it; `reach` and `tolerance` in encoder frames. Their starts follow those of `kept` at least `spacing`
    frames apart (1 for CTC, whose frames emit one token each; 0 for a transducer, whose frames may emit several)."""
    seam = window.keep_start
    low = seam - reach
    first = len(kept)
    while first and kept[first - 1].start >= low:
        first -= 1
    near = [index for index, span in enumerate(spans) if low <= span.start < min(seam + reach, window.keep_end)]
    agreed = last_agreement(kept[first:], [spans[index] for index in near], tolerance)
    if agreed is None:
        chosen = [span for span in spans if window.keeps(span)]
    else:
        last_kept, last_near = agreed
        after = spans[near[last_near] + 1 :]
        if first + last_kept == len(kept) - 1:  # agrees up to the last kept token: all it has after that is new
            chosen = [span for span in after if span.start < window.keep_end]
        else:  # the kept tokens after the agreement stand: the window adds only its own part
            chosen = [span for span in after if window.keeps(span)]
    return in_order(chosen, kept[-1].start + spacing if kept else 0, spacing)


def last_agreement(kept: list[TokenSpan], spans: list[TokenSpan], tolerance: int) -> tuple[int, int] | None:
    """(index in `kept`, index in `spans`) of the last pair of a longest common subsequence whose pairs are the same
    token at most `tolerance` frames apart, preferring the last kept token; None when no token agrees."""

    def same(a: TokenSpan, b: TokenSpan) -> bool:
        return a.token_id == b.token_id and abs(a.start - b.start) <= tolerance

    lengths = [[0] * (len(spans) + 1) for _ in range(len(kept) + 1)]
    for i, a in enumerate(kept, 1):
        for j, b in enumerate(spans, 1):
            lengths[i][j] = lengths[i - 1][j - 1] + 1 if same(a, b) else max(lengths[i - 1][j], lengths[i][j - 1])
    i, j = len(kept), len(spans)
    while i and j:
        if same(kept[i - 1], spans[j - 1]) and lengths[i][j] == lengths[i - 1][j - 1] + 1:
            return i - 1, j - 1
        if lengths[i][j - 1] >= lengths[i - 1][j]:
            j -= 1
        else:
            i -= 1
    return None


def in_order(spans: list[TokenSpan], earliest: int, spacing: int) -> list[TokenSpan]:
    """`spans` with each start moved, where needed, to `spacing` frames after the one before (the first: to
    `earliest`), so that a token a window placed a frame before the last kept one still comes after it in time."""
    ordered = []
    for span in spans:
        if span.start < earliest:
            span = replace(span, start=earliest, end=max(span.end, earliest))
        ordered.append(span)
        earliest = span.start + spacing
    return ordered
