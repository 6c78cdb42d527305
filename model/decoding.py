"""Greedy decoding (CTC, and batched RNN-T / TDT transducers, with optional hotword boosting), the options that
choose beam search (model.beam) instead, and word timestamps from encoder frames."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from model.biasing import ContextGraph, Hotword, parse_hotwords
from model.heads import Network, TransducerDecoder
from model.tokenizer import Tokenizer

MAX_BEAM_SIZE = 16


@dataclass(frozen=True)
class DecodingOptions:
    """How a request's encoder output is decoded: greedy (the default), or a beam search of `beam_size` biased
    towards `hotwords` and, for CTC, scored by a KenLM word language model (`lm_path`, weighted
    `lm_alpha` * ln P + `lm_beta` per word)."""

    beam_size: int = 1
    hotwords: tuple[Hotword, ...] = ()
    lm_path: str | None = None
    lm_alpha: float = 0.5
    lm_beta: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "hotwords", tuple(self.hotwords))
        if not isinstance(self.beam_size, int) or not 1 <= self.beam_size <= MAX_BEAM_SIZE:
            raise ValueError(f"beam_size must be an integer from 1 to {MAX_BEAM_SIZE}, got {self.beam_size!r}")

    @property
    def searches(self) -> bool:
        """Whether decoding needs more than each frame's best token (CTC's encoder then sends frame scores)."""
        return self.beam_size > 1 or bool(self.hotwords) or self.lm_path is not None


GREEDY = DecodingOptions()
BIASED_BEAM_SIZE = 4  # the beam hotwords or a language model get when no beam size is asked for


def decoding_options(
    hotwords: Iterable[str | Hotword] = (),
    beam_size: int | None = None,
    lm_path: str | None = None,
    lm_alpha: float = DecodingOptions.lm_alpha,
    lm_beta: float = DecodingOptions.lm_beta,
) -> DecodingOptions:
    """What a request asks for -> its DecodingOptions: hotwords parsed (`phrase` or `phrase:weight`; raises
    HotwordError), and a beam of BIASED_BEAM_SIZE for hotwords or a language model when `beam_size` is None."""
    hotwords = parse_hotwords(hotwords)
    if beam_size is None:
        beam_size = BIASED_BEAM_SIZE if hotwords or lm_path else 1
    return DecodingOptions(beam_size, hotwords, lm_path, lm_alpha, lm_beta)


@dataclass(frozen=True)
class TokenSpan:
    """One emitted token and the encoder frames [start, end] its run of repeats covers."""

    token_id: int
    start: int
    end: int


@dataclass(frozen=True)
class Word:
    word: str
    start: float  # seconds
    end: float  # seconds


@dataclass(frozen=True)
class Transcript:
    text: str
    words: list[Word] = field(default_factory=list)
    duration: float = 0.0  # seconds of input audio
    word_tokens: list[tuple[int, ...]] = field(default_factory=list, repr=False)  # each word's token ids


def token_spans(best_path: Sequence[int], blank_id: int, offset: int = 0) -> list[TokenSpan]:
    """One row of per-frame best ids -> its tokens: repeats merged, blanks dropped; frames shifted by `offset`."""
    spans: list[TokenSpan] = []
    previous = blank_id
    for frame, token in enumerate(best_path, start=offset):
        if token == previous and token != blank_id:
            spans[-1] = TokenSpan(token, spans[-1].start, frame)
        elif token != blank_id:
            spans.append(TokenSpan(token, frame, frame))
        previous = token
    return spans


def best_paths(logits: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """(B, T, vocab) logits -> the valid part of each row's per-frame best ids."""
    best = logits.argmax(dim=-1).cpu()
    return [row[:length] for row, length in zip(best.tolist(), lengths.tolist())]


def greedy_ctc(logits: torch.Tensor, lengths: torch.Tensor, blank_id: int) -> list[list[TokenSpan]]:
    """Best path per frame, repeats merged, blanks dropped: one list of token spans per batch row."""
    return [token_spans(path, blank_id) for path in best_paths(logits, lengths)]


@dataclass(frozen=True)
class Emission:
    """A token a transducer emitted: the encoder frame it was emitted at, and how far the frame pointer then moved
    (TDT: the predicted duration; RNN-T: 1 when `max_symbols_per_step` forced the move, else 0)."""

    token_id: int
    frame: int
    duration: int

    def span(self, offset: int = 0) -> TokenSpan:
        """The frames the token covers: those its duration skips, at least its own."""
        start = self.frame + offset
        return TokenSpan(self.token_id, start, start + max(self.duration, 1) - 1)


@torch.inference_mode()
def greedy_transducer(
    network: TransducerDecoder,
    encoded: torch.Tensor,
    lengths: torch.Tensor,
    graphs: Sequence[ContextGraph | None] | None = None,
) -> list[list[Emission]]:
    """Batched greedy RNN-T / TDT decoding of (B, T, decoder_hidden_size) projected encoder frames.

    Each row keeps a frame pointer. At each step the joint scores the pointed frame against the prediction
    network's output; a token other than the blank is emitted and fed back to the prediction network. RNN-T moves
    the pointer one frame on a blank; TDT moves it by the predicted duration (at least one on a blank). After
    `max_symbols_per_step` emissions in a row at one frame the pointer moves on by one, so decoding always ends.
    A row with a context graph (`graphs`) chooses its token by log-probability plus the graph's reward for it.
    """
    config = network.config
    batch, frames = encoded.shape[:2]
    rows = torch.arange(batch, device=encoded.device)
    durations = torch.tensor(config.durations, dtype=torch.long, device=encoded.device)
    lengths = lengths.to(encoded.device)
    frame = torch.zeros(batch, dtype=torch.long, device=encoded.device)
    symbols = torch.zeros_like(frame)  # emissions in a row at the current frame
    # Every hypothesis starts from the blank, as in NeMo (whose blank embedding is the zero padding row).
    predicted, (hidden, cell) = network.decoder(
        torch.full_like(frame, config.blank_id), network.decoder.initial_state(batch)
    )
    steps = []
    biasing = Boosting(graphs, config.blank_id) if graphs and any(graphs) else None
    active = frame < lengths
    while active.any():
        logits = network.joint(encoded[rows, frame.clamp(max=frames - 1)], predicted)
        token = (biasing.choose if biasing else torch.argmax)(logits[:, : config.vocab_size], -1)
        blank = token == config.blank_id
        if len(durations):
            advance = durations[logits[:, config.vocab_size :].argmax(-1)]
            advance = torch.where(blank, advance.clamp(min=1), advance)
        else:
            advance = blank.long()
        symbols = torch.where(blank, 0, symbols + 1)
        advance = torch.where((symbols >= config.max_symbols_per_step) & (advance == 0), 1, advance)
        symbols = torch.where(advance > 0, 0, symbols)
        emitted = active & ~blank
        steps.append(torch.stack([token, frame, advance, emitted.long()], dim=1))
        if emitted.any():  # only rows that emitted move their prediction network on
            index = emitted.nonzero()[:, 0]
            if biasing:
                biasing.emit(index.tolist(), token[index].tolist())
            output, (hidden_rows, cell_rows) = network.decoder(token[index], (hidden[:, index], cell[:, index]))
            predicted[index], hidden[:, index], cell[:, index] = output, hidden_rows, cell_rows
        frame = frame + advance
        active = frame < lengths
    if not steps:
        return [[] for _ in range(batch)]
    table = torch.stack(steps, dim=1).cpu()  # (B, steps, [token, frame, advance, emitted])
    return [
        [Emission(token, frame, advance) for token, frame, advance, emitted in row if emitted] for row in table.tolist()
    ]


class Boosting:
    """Greedy transducer decoding's hotword state per batch row (None: a row without hotwords)."""

    def __init__(self, graphs: Sequence[ContextGraph | None], blank_id: int) -> None:
        self.graphs = list(graphs)
        self.states = [graph.start if graph else None for graph in self.graphs]
        self.ends_word = torch.tensor(next(graph for graph in self.graphs if graph).ends_word)
        self.blank_id = blank_id

    def choose(self, logits: torch.Tensor, dim: int) -> torch.Tensor:
        """(B, vocab) token logits -> each row's token: the best by log-probability plus its hotword reward (the
        blank, which changes no match, earns none)."""
        scores = logits.float().log_softmax(dim)
        for row, (graph, state) in enumerate(zip(self.graphs, self.states)):
            if graph is None:
                continue
            rewards, ending, inside = graph.rewards(state)
            ids = list(rewards)
            boosted = scores[row, ids] + torch.tensor(list(rewards.values()))
            penalties = torch.where(self.ends_word, ending, inside)
            penalties[self.blank_id] = 0.0
            scores[row] += penalties
            scores[row, ids] = boosted
        return scores.argmax(dim)

    def emit(self, rows: list[int], tokens: list[int]) -> None:
        for row, token in zip(rows, tokens):
            if self.graphs[row] is not None:
                self.states[row], _ = self.graphs[row].step(self.states[row], token)


def greedy_spans(network: Network, output: torch.Tensor, lengths: torch.Tensor) -> list[list[TokenSpan]]:
    """A network's output (CTC logits, or a transducer's projected encoder frames) -> token spans per row."""
    if isinstance(network, TransducerDecoder):
        return [[emission.span() for emission in row] for row in greedy_transducer(network, output, lengths)]
    return greedy_ctc(output, lengths, network.config.blank_id)


def timed_words(spans: list[TokenSpan], tokenizer: Tokenizer, frame_seconds: float) -> list[tuple[Word, list[int]]]:
    """Group tokens into words at SentencePiece word starts; a word spans its first to its last token's frames.
    Each word comes with its token ids."""
    groups: list[list[TokenSpan]] = []
    for span in spans:
        if not groups or tokenizer.starts_word(span.token_id):
            groups.append([span])
        else:
            groups[-1].append(span)
    words = []
    for group in groups:
        ids = [span.token_id for span in group]
        text = tokenizer.decode(ids).strip()
        if text:
            start, end = round(group[0].start * frame_seconds, 3), round((group[-1].end + 1) * frame_seconds, 3)
            words.append((Word(text, start, end), ids))
    return words


def transcript_from_spans(
    spans: list[TokenSpan], tokenizer: Tokenizer, frame_seconds: float, duration: float
) -> Transcript:
    """Decoded token spans (frames counted from the start of the audio) -> text and timed words.

    The text is its words joined by single spaces: a lone word-start piece ('▁') would otherwise leave a double
    space, or one at either end."""
    text = " ".join(tokenizer.decode([span.token_id for span in spans]).split())
    words = timed_words(spans, tokenizer, frame_seconds)
    return Transcript(text, [word for word, _ in words], duration, [tuple(ids) for _, ids in words])
