"""Word and character error rates (Levenshtein distance over words or characters)."""

from __future__ import annotations

from collections.abc import Sequence


def edit_distance(reference: Sequence, hypothesis: Sequence) -> int:
    previous = list(range(len(hypothesis) + 1))
    for i, ref_item in enumerate(reference, start=1):
        current = [i]
        for j, hyp_item in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_item != hyp_item)))
        previous = current
    return previous[-1]


def error_rate(references: Sequence[Sequence], hypotheses: Sequence[Sequence]) -> float:
    """Total edits over total reference length, across a corpus."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    edits = sum(edit_distance(r, h) for r, h in zip(references, hypotheses))
    return edits / max(1, sum(len(r) for r in references))


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    return error_rate([r.split() for r in references], [h.split() for h in hypotheses])


def char_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    return error_rate(list(references), list(hypotheses))
