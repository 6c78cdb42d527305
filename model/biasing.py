"""Context biasing: the words a request names (hotwords, or a prompt's uncommon words) as a trie of token ids that
decoding walks.

The context-graph scheme: every token that extends a partial match of a phrase earns the phrase's weight at once,
so a beam keeps the hypothesis while the phrase is being spelled; a match that stops short of the whole phrase
gives back what it earned, so only completed phrases keep a reward. Weights are in the decoder's log-probability
units (natural log), per token.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from model.tokenizer import Tokenizer

MAX_HOTWORDS = 100  # phrases a request may name
MAX_HOTWORD_CHARS = 64  # characters in one phrase
MAX_HOTWORD_WEIGHT = 10.0  # per-token reward; beyond it a phrase would override what the audio says
DEFAULT_HOTWORD_WEIGHT = 3.0  # per-token reward of a phrase given without ":weight"

# The most frequent English words: a prompt's words minus these become its hotwords.
COMMON_WORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before being below between
    both but by can could did do does doing down during each few for from further had has have having he her here
    hers herself him himself his how i if in into is it its itself just let me more most my myself no nor not now of
    off on once only or other our ours ourselves out over own please same she should so some such than that the
    their theirs them themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves said says say one
    two new get got like make made know see go went come came take took want use used way well back even good
    much many time day year people thing things okay yes hello hi thanks thank""".split()
)


class HotwordError(ValueError):
    """Hotwords a request cannot use: too many, too long, a bad weight, or characters the tokenizer cannot spell."""


@dataclass(frozen=True)
class Hotword:
    phrase: str
    weight: float = DEFAULT_HOTWORD_WEIGHT


def parse_hotword(text: str) -> Hotword:
    """`phrase` or `phrase:weight` -> Hotword; raises HotwordError naming what is wrong."""
    phrase, weight = text, DEFAULT_HOTWORD_WEIGHT
    head, colon, tail = text.rpartition(":")
    if colon:
        try:
            phrase, weight = head, float(tail)
        except ValueError:
            raise HotwordError(f"hotword {text!r}: the weight after ':' must be a number, got {tail!r}") from None
        if not 0 < weight <= MAX_HOTWORD_WEIGHT or not math.isfinite(weight):
            raise HotwordError(f"hotword {text!r}: weight must be in (0, {MAX_HOTWORD_WEIGHT:g}], got {tail}")
    phrase = " ".join(phrase.split())
    if not phrase:
        raise HotwordError(f"hotword {text!r} has no words")
    if len(phrase) > MAX_HOTWORD_CHARS:
        raise HotwordError(f"hotword {phrase[:20]!r}... has {len(phrase)} characters; at most {MAX_HOTWORD_CHARS}")
    return Hotword(phrase, weight)


def parse_hotwords(items: Iterable[str | Hotword]) -> tuple[Hotword, ...]:
    """Phrases (each `phrase` or `phrase:weight`, or a Hotword; blank ones skipped) -> Hotwords, the last weight
    of a repeated phrase winning; raises HotwordError."""
    parsed = (item if isinstance(item, Hotword) else parse_hotword(item) for item in items if str(item).strip())
    hotwords = {hotword.phrase: hotword for hotword in parsed}
    if len(hotwords) > MAX_HOTWORDS:
        raise HotwordError(f"{len(hotwords)} hotwords given; at most {MAX_HOTWORDS}")
    return tuple(hotwords.values())


def prompt_hotwords(prompt: str, tokenizer: Tokenizer) -> tuple[Hotword, ...]:
    """A free-text prompt (OpenAI's `prompt`) -> its uncommon words as hotwords, in order, at most MAX_HOTWORDS;
    words the tokenizer cannot spell are left out (a prompt is context, not a list the client vouches for)."""
    words = [word for word in re.findall(r"[^\W_]+(?:['-][^\W_]+)*", prompt) if word.lower() not in COMMON_WORDS]
    spelled = [word for word in dict.fromkeys(words) if spelling(tokenizer, word) is not None]
    return tuple(Hotword(word[:MAX_HOTWORD_CHARS]) for word in spelled[:MAX_HOTWORDS])


def spelling(tokenizer: Tokenizer, phrase: str) -> tuple[int, ...] | None:
    """The tokenizer's ids for `phrase` (lowercased for an uncased tokenizer), or None when it cannot spell it."""
    ids = tuple(tokenizer.encode(phrase if tokenizer.cased else phrase.lower()))
    return None if tokenizer.unk_id in ids else ids


@dataclass(eq=False)
class ContextNode:
    """A trie node: the phrase prefix spelled by the tokens from the root to here."""

    weight: float = 0.0  # the reward of the token that leads here
    complete: bool = False  # a whole phrase ends here
    children: dict[int, ContextNode] = field(default_factory=dict)


@dataclass(frozen=True)
class ContextState:
    """Where a hypothesis stands in the trie: its node, the reward its unfinished match has earned so far, and
    whether a whole phrase has just been spelled (its reward stays if the next token starts a word or is
    punctuation, or at the end; a token that goes on with the word takes it back: "enjoy" is not "enjoyed")."""

    node: ContextNode
    pending: float = 0.0
    complete: bool = False


class ContextGraph:
    """Hotword phrases as a trie of the tokenizer's ids for them. `step` scores one token; `finish` gives back an
    unfinished match's reward at the end of the audio."""

    def __init__(self, phrases: dict[tuple[int, ...], float], tokenizer: Tokenizer) -> None:
        self.root = ContextNode()
        for ids, weight in phrases.items():
            node = self.root
            for token in ids:
                node = node.children.setdefault(token, ContextNode())
                node.weight = max(node.weight, weight)
            node.complete = True
        self.start = ContextState(self.root)
        self.ends_word = tokenizer.ends_word

    @classmethod
    def build(cls, tokenizer: Tokenizer, hotwords: Iterable[Hotword]) -> ContextGraph:
        """Raises HotwordError for a phrase with characters the tokenizer cannot spell. An uncased tokenizer gets
        the phrases lowercased."""
        phrases: dict[tuple[int, ...], float] = {}
        for hotword in hotwords:
            ids = spelling(tokenizer, hotword.phrase)
            if ids is None:
                missing = sorted({char for char in hotword.phrase if spelling(tokenizer, char) is None})
                raise HotwordError(f"hotword {hotword.phrase!r}: the model cannot spell {''.join(missing)!r}")
            phrases[ids] = max(phrases.get(ids, 0.0), hotword.weight)
        return cls(phrases, tokenizer)

    def step(self, state: ContextState, token: int) -> tuple[ContextState, float]:
        """The state after `token`, and the reward it earns (negative when it ends a match short of a phrase)."""
        pending = self._kept(state, token)
        child = state.node.children.get(token)
        if child is not None:
            return ContextState(child, pending + child.weight, child.complete), child.weight
        child = self.root.children.get(token)
        if child is None:
            return self.start, -pending
        return ContextState(child, child.weight, child.complete), child.weight - pending

    def _kept(self, state: ContextState, token: int) -> float:
        """The reward still at stake before `token`: none once a spelled phrase is followed by a new word."""
        return 0.0 if state.complete and self.ends_word[token] else state.pending

    @staticmethod
    def finish(state: ContextState) -> float:
        return 0.0 if state.complete else -state.pending

    def rewards(self, state: ContextState) -> tuple[dict[int, float], float, float]:
        """What `step` would give: per token in the trie's reach, then for any other token that ends the word
        before it (`ends_word`), and for any other token that does not."""
        tokens = {**self.root.children, **state.node.children}
        ending = 0.0 if state.complete else -state.pending
        return {token: self.step(state, token)[1] for token in tokens}, ending, -state.pending
