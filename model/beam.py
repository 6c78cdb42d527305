"""Beam search: CTC prefix beam search over each frame's most likely tokens, with hotword biasing
(model.biasing) and an optional word n-gram language model (KenLM, when its package is installed); and a small
RNN-T / TDT beam search with hotword biasing.

The encoder sends the beam search a small array per window, not its whole (frames, vocab) output: each frame's
TOP_K best log-probabilities, the blank's always first (`frame_scores`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from model.biasing import ContextGraph, ContextState
from model.config import RNNTConfig
from model.decoding import Emission, TokenSpan
from model.heads import LSTMState, TransducerDecoder
from model.tokenizer import WORD_START, Tokenizer

TOP_K = 16  # tokens per frame the beam search may extend a prefix with, the blank included
PRUNE_LOG_PROB = -12.0  # a frame's tokens this far below its best are never tried
LOG10 = math.log(10.0)


def log_add(a: float, b: float) -> float:
    """ln(e^a + e^b) of two floats, without numpy's per-call overhead."""
    if a < b:
        a, b = b, a
    return a if b == -math.inf else a + math.log1p(math.exp(b - a))


def frame_scores(logits: torch.Tensor, blank_id: int, k: int = TOP_K) -> torch.Tensor:
    """(B, T, vocab) CTC logits -> (B, T, 2, k) float32: [..., 0, :] log-probabilities, [..., 1, :] their token ids
    (exact in float32 below 2**24), the blank's in slot 0 and the k - 1 best other tokens after it."""
    log_probs = logits.float().log_softmax(-1)
    blank = log_probs[..., blank_id : blank_id + 1]
    others = log_probs.clone()
    others[..., blank_id] = -math.inf
    best, ids = others.topk(min(k, log_probs.shape[-1]) - 1, dim=-1)
    scores = torch.cat([blank, best], -1)
    ids = torch.cat([torch.full_like(ids[..., :1], blank_id), ids], -1)
    return torch.stack([scores, ids.float()], dim=-2)


def is_frame_scores(encoded: np.ndarray) -> bool:
    """Whether a CTC window's encoder output is `frame_scores` (else: best ids per frame)."""
    return encoded.ndim == 3


class LanguageModelError(ValueError):
    """A language model that cannot be used: kenlm missing, no such file, or a file kenlm cannot read."""


class WordLM:
    """A KenLM word n-gram model (ARPA or binary), weighted: alpha * ln P(word | history) + beta per word."""

    def __init__(self, path: str | os.PathLike, alpha: float, beta: float) -> None:
        try:
            import kenlm
        except ImportError:
            raise LanguageModelError("a language model needs the kenlm package: pip install kenlm") from None
        if not os.path.isfile(path):
            raise LanguageModelError(f"language model {path}: no such file")
        try:
            self.model = kenlm.Model(str(path))
        except OSError as err:  # kenlm's message names the file and what is wrong in it
            raise LanguageModelError(f"language model {path}: {err}") from None
        self.alpha, self.beta = alpha, beta
        self._kenlm = kenlm

    def start(self) -> object:
        state = self._kenlm.State()
        self.model.BeginSentenceWrite(state)
        return state

    def score(self, state: object, word: str) -> tuple[object, float]:
        """The state after `word`, and its weighted score."""
        after = self._kenlm.State()
        log10_prob = self.model.BaseScore(state, word, after)
        return after, self.alpha * log10_prob * LOG10 + self.beta

    def end(self, state: object) -> float:
        return self.alpha * self.model.BaseScore(state, "</s>", self._kenlm.State()) * LOG10


@dataclass(eq=False)
class Prefix:
    """A node of the trie of token prefixes the search has tried: one per distinct token sequence, so hypotheses
    that reach the same tokens by different paths merge. Holds the prefix's bonuses."""

    token: int
    parent: Prefix | None
    context: ContextState | None
    bonus: float  # hotword and language-model score of the whole prefix
    lm_state: object = None
    word: str = ""  # the pieces of its last, unfinished word
    children: dict[int, Prefix] = field(default_factory=dict)


# The tokens of a prefix's best single path, the last first: (token, first frame, last frame, the trace before).
Trace = tuple[int, int, int, "Trace"] | None


def trace_spans(trace: Trace, offset: int) -> list[TokenSpan]:
    spans = []
    while trace is not None:
        token, start, end, trace = trace
        spans.append(TokenSpan(token, start + offset, end + offset))
    return spans[::-1]


class CTCBeamSearch:
    """Prefix beam search of one window's `frame_scores`; ranks prefixes by acoustic log-probability (summed over
    the paths that spell them) plus the bonuses of the hotwords (`graph`) and the language model (`lm`) they spell.
    A prefix's token frames are those of its best single path (Viterbi), as greedy decoding's are of its one path."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        beam_size: int,
        graph: ContextGraph | None = None,
        lm: WordLM | None = None,
    ) -> None:
        self.tokenizer, self.beam_size, self.graph, self.lm = tokenizer, beam_size, graph, lm

    def __call__(self, scores: np.ndarray, offset: int = 0) -> list[TokenSpan]:
        """(T, 2, k) frame scores -> the best prefix's tokens, frames shifted by `offset`."""
        blank = self.tokenizer.blank_id
        root = Prefix(blank, None, self.graph.start if self.graph else None, 0.0, self.lm.start() if self.lm else None)
        # Per prefix, ending in a blank and in its last token: log-probability of all paths, of the best path, and
        # the best path's trace.
        beams: dict[Prefix, list] = {root: [0.0, -math.inf, 0.0, -math.inf, None, None]}
        for frame, (log_probs, ids) in enumerate(scores):
            keep = log_probs >= log_probs.max() + PRUNE_LOG_PROB
            candidates = list(zip(log_probs[keep].tolist(), ids[keep].astype(int).tolist()))
            beams = self._step(beams, candidates, frame, blank)
        _, (_, _, best_blank, best_token, trace_blank, trace_token) = max(
            beams.items(), key=lambda item: self._final_score(item[0], item[1][:2])
        )
        return trace_spans(trace_blank if best_blank >= best_token else trace_token, offset)

    def _step(
        self, beams: dict[Prefix, list], candidates: list[tuple[float, int]], frame: int, blank: int
    ) -> dict[Prefix, list]:
        following: dict[Prefix, list] = {}

        def state(prefix: Prefix) -> list:
            return following.setdefault(prefix, [-math.inf, -math.inf, -math.inf, -math.inf, None, None])

        def into_token(prefix: Prefix, log_prob: float, best: float, trace: Trace) -> None:
            entry = state(prefix)
            entry[1] = log_add(entry[1], log_prob)
            if best > entry[3]:
                entry[3], entry[5] = best, trace

        for prefix, (in_blank, in_token, best_blank, best_token, trace_blank, trace_token) in beams.items():
            total = log_add(in_blank, in_token)
            best, trace = (best_blank, trace_blank) if best_blank >= best_token else (best_token, trace_token)
            for log_prob, token in candidates:
                if token == blank:
                    entry = state(prefix)
                    entry[0] = log_add(entry[0], total + log_prob)
                    if best + log_prob > entry[2]:
                        entry[2], entry[4] = best + log_prob, trace
                elif token == prefix.token and prefix.parent is not None:
                    if trace_token is not None:  # the token's run goes on
                        run = (token, trace_token[1], frame, trace_token[3])
                        into_token(prefix, in_token + log_prob, best_token + log_prob, run)
                    if in_blank > -math.inf:  # a blank between: the token again
                        again = (token, frame, frame, trace_blank)
                        into_token(self._extend(prefix, token), in_blank + log_prob, best_blank + log_prob, again)
                else:
                    into_token(
                        self._extend(prefix, token), total + log_prob, best + log_prob, (token, frame, frame, trace)
                    )
        ranked = sorted(following.items(), key=lambda item: -(log_add(item[1][0], item[1][1]) + item[0].bonus))
        return dict(ranked[: self.beam_size])

    def _extend(self, prefix: Prefix, token: int) -> Prefix:
        child = prefix.children.get(token)
        if child is not None:
            return child
        bonus, context, lm_state, word = prefix.bonus, prefix.context, prefix.lm_state, prefix.word
        if self.graph is not None:
            context, reward = self.graph.step(context, token)
            bonus += reward
        if self.lm is not None:
            piece = self.tokenizer.piece(token)
            if piece.startswith(WORD_START) and word:
                lm_state, score = self.lm.score(lm_state, word)
                bonus += score
                word = ""
            word += piece.removeprefix(WORD_START)
        child = Prefix(token, prefix, context, bonus, lm_state, word)
        prefix.children[token] = child
        return child

    def _final_score(self, prefix: Prefix, probs: list[float]) -> float:
        score = log_add(*probs) + prefix.bonus
        if self.graph is not None:
            score += self.graph.finish(prefix.context)
        if self.lm is not None:
            state = prefix.lm_state
            if prefix.word:
                state, word_score = self.lm.score(state, prefix.word)
                score += word_score
            score += self.lm.end(state)
        return score


@dataclass(eq=False)
class TransducerHypothesis:
    emissions: tuple[Emission, ...]
    score: float
    frame: int
    symbols: int  # emissions in a row at `frame`
    predicted: torch.Tensor | None  # (decoder_hidden_size,) the prediction network's output; None until _predict
    state: LSTMState  # each (layers, 1, decoder_hidden_size)
    context: ContextState | None

    def key(self) -> tuple:
        return self.frame, tuple(emission.token_id for emission in self.emissions)


@torch.inference_mode()
def transducer_beam_search(
    network: TransducerDecoder, encoded: torch.Tensor, beam_size: int, graph: ContextGraph | None = None
) -> list[Emission]:
    """Beam search of one window's (T, decoder_hidden_size) projected encoder frames, RNN-T or TDT.

    Best-first over hypotheses that each keep their own frame pointer (TDT's durations move them apart): every
    step scores all live hypotheses' pointed frames in one joint call, extends each by its `beam_size` best
    tokens (the blank moving the pointer on: by one, or TDT's best duration), merges extensions that reach the
    same tokens at the same frame, and keeps the `beam_size` best. A hypothesis whose pointer passes the last frame
    is finished; the search ends when the best finished one beats every live one. Hotwords add their rewards
    (model.biasing) to the tokens' log-probabilities."""
    config = network.config
    frames, vocab, durations = len(encoded), config.vocab_size, config.durations
    start, start_state = network.decoder(torch.tensor([config.blank_id]), network.decoder.initial_state(1))
    live = [TransducerHypothesis((), 0.0, 0, 0, start[0], start_state, graph.start if graph else None)]
    finished: list[tuple[float, TransducerHypothesis]] = []
    while live:
        logits = network.joint(
            encoded[[hypothesis.frame for hypothesis in live]], torch.stack([h.predicted for h in live])
        )
        token_log_probs = logits[:, :vocab].float().log_softmax(-1)
        duration_log_probs = logits[:, vocab:].float().log_softmax(-1) if durations else None
        extensions: dict[tuple, TransducerHypothesis] = {}
        for row, hypothesis in enumerate(live):
            tokens = token_log_probs[row].topk(min(beam_size, vocab)).indices.tolist()
            if graph is not None:  # the tokens a hotword would go on with, however unlikely
                tokens = list(dict.fromkeys(tokens + list(graph.rewards(hypothesis.context)[0])))
            for token in tokens:
                log_prob = float(token_log_probs[row, token])
                extension = _extend_transducer(
                    hypothesis, token, log_prob, duration_log_probs[row] if durations else None, config, graph
                )
                kept = extensions.get(extension.key())
                if kept is None or kept.score < extension.score:
                    extensions[extension.key()] = extension
        ranked = sorted(extensions.values(), key=lambda hypothesis: -hypothesis.score)[:beam_size]
        live = []
        for hypothesis in ranked:
            if hypothesis.frame >= frames:
                final = hypothesis.score + (graph.finish(hypothesis.context) if graph else 0.0)
                finished.append((final, hypothesis))
            else:
                live.append(hypothesis)
        _predict(network, [hypothesis for hypothesis in live if hypothesis.predicted is None])
        if finished and max(finished, key=lambda item: item[0])[0] >= max((h.score for h in live), default=-math.inf):
            break
    return list(max(finished, key=lambda item: item[0])[1].emissions)


def _extend_transducer(
    hypothesis: TransducerHypothesis,
    token: int,
    log_prob: float,
    duration_log_probs: torch.Tensor | None,
    config: RNNTConfig,
    graph: ContextGraph | None,
) -> TransducerHypothesis:
    """`hypothesis` extended by `token` (the blank included); a non-blank extension's prediction is left to
    `_predict` (None until then)."""
    blank = token == config.blank_id
    if duration_log_probs is not None:  # the best duration, as greedy decoding takes it (a blank moves on)
        choice = int(duration_log_probs.argmax())
        advance, log_prob = config.durations[choice], log_prob + float(duration_log_probs[choice])
        advance = max(advance, 1) if blank else advance
    else:
        advance = 1 if blank else 0
    symbols = 0 if blank or advance else hypothesis.symbols + 1
    if symbols >= config.max_symbols_per_step:
        advance, symbols = 1, 0
    if blank:
        return replace(hypothesis, score=hypothesis.score + log_prob, frame=hypothesis.frame + advance, symbols=0)
    context, reward = graph.step(hypothesis.context, token) if graph else (None, 0.0)
    return TransducerHypothesis(
        hypothesis.emissions + (Emission(token, hypothesis.frame, advance),),
        hypothesis.score + log_prob + reward,
        hypothesis.frame + advance,
        symbols,
        None,
        hypothesis.state,
        context,
    )


def _predict(network: TransducerDecoder, hypotheses: list[TransducerHypothesis]) -> None:
    """Run the prediction network one step for the hypotheses that emitted a token, in one batch."""
    if not hypotheses:
        return
    tokens = torch.tensor([hypothesis.emissions[-1].token_id for hypothesis in hypotheses])
    hidden = torch.cat([hypothesis.state[0] for hypothesis in hypotheses], dim=1)
    cell = torch.cat([hypothesis.state[1] for hypothesis in hypotheses], dim=1)
    predicted, (hidden, cell) = network.decoder(tokens, (hidden, cell))
    for index, hypothesis in enumerate(hypotheses):
        hypothesis.predicted = predicted[index]
        hypothesis.state = (hidden[:, index : index + 1], cell[:, index : index + 1])
