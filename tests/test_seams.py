"""Joining windows' tokens at their seams (pipeline/seams.py): a token a window placed differently is kept once."""

from __future__ import annotations

from model.decoding import TokenSpan
from model.windows import Window, tokens_to_keep

REACH, TOLERANCE = 40, 4  # encoder frames: 3.2 s and 0.32 s at 80 ms
SECOND = Window(offset=50, keep_start=100, keep_end=110)  # the window after one that kept frames up to 100


def tokens(*pairs: tuple[int, int]) -> list[TokenSpan]:
    return [TokenSpan(token_id, start, start) for token_id, start in pairs]


def keep(kept: list[TokenSpan], spans: list[TokenSpan], window: Window = SECOND, spacing: int = 1) -> list[TokenSpan]:
    return tokens_to_keep(kept, spans, window, REACH, TOLERANCE, spacing)


def test_a_token_placed_just_after_the_seam_by_the_next_window_is_not_doubled() -> None:
    kept = tokens((1, 90), (2, 95), (3, 99))
    spans = tokens((1, 90), (2, 95), (3, 100), (4, 105))  # by its own part alone, 3 would be kept twice
    assert keep(kept, spans) == tokens((4, 105))


def test_tokens_placed_after_the_seam_by_one_window_and_before_it_by_the_next_are_not_dropped() -> None:
    kept = tokens((1, 70), (2, 72))  # the first window placed 3, 4 and 5 late, at 101-103: after its own part
    spans = tokens((1, 70), (2, 72), (3, 80), (4, 84), (5, 96), (6, 104), (7, 112))
    assert keep(kept, spans) == tokens((3, 80), (4, 84), (5, 96), (6, 104))  # 7 is past its part: the next window's


def test_after_a_disagreement_the_kept_tokens_stand_and_the_window_adds_its_own_part() -> None:
    kept = tokens((1, 90), (2, 94), (3, 98))
    spans = tokens((1, 90), (2, 94), (9, 98), (4, 103))  # it hears 9 where 3 was kept
    assert keep(kept, spans) == tokens((4, 103))


def test_without_agreement_a_window_keeps_its_own_part() -> None:
    kept = tokens((1, 90), (2, 95))
    assert keep(kept, tokens((1, 80), (7, 98), (8, 100), (9, 112))) == tokens((8, 100))  # 1 at 80: too far to agree
    assert keep([], tokens((7, 40), (8, 100), (9, 109))) == tokens((8, 100), (9, 109))
    first = Window(offset=0, keep_start=0, keep_end=30)
    assert keep([], tokens((1, 0), (2, 29), (3, 30)), first) == tokens((1, 0), (2, 29))


def test_starts_follow_the_kept_ones() -> None:
    kept = tokens((1, 90), (2, 99))
    spans = tokens((1, 88), (2, 96), (3, 97), (4, 98), (5, 104))
    assert keep(kept, spans) == tokens((3, 100), (4, 101), (5, 104))
    assert keep(kept, spans, spacing=0) == tokens((3, 99), (4, 99), (5, 104))  # a transducer's frame emits several
