"""Context biasing and beam search: the hotword trie, CTC prefix beam search, transducer boosting and beam search,
and what they do to the embedded model's transcripts (relative checks: with against without biasing)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model import load_model
from model.beam import CTCBeamSearch, LanguageModelError, WordLM, frame_scores, transducer_beam_search
from model.biasing import (
    MAX_HOTWORD_CHARS,
    MAX_HOTWORDS,
    ContextGraph,
    Hotword,
    HotwordError,
    parse_hotwords,
    prompt_hotwords,
)
from model.decoding import DecodingOptions, greedy_transducer, token_spans
from recipe.metrics import word_error_rate

# Words the tests' unrelated hotword list holds: names and terms none of the unseen sentences contain.
UNRELATED = ("kowalski", "reykjavik", "kubernetes", "albuquerque", "ibuprofen", "zanzibar", "okonkwo", "tuesday")


@pytest.fixture(scope="module")
def default_model():
    return load_model()


@pytest.fixture(scope="module")
def tokenizer(default_model):
    return default_model.tokenizer


def test_hotwords_parse_weights_and_refuse_bad_ones(tokenizer) -> None:
    assert parse_hotwords(["kowalski", " new  york:2.5", "", "kowalski:4"]) == (
        Hotword("kowalski", 4.0),
        Hotword("new york", 2.5),
    )
    for bad, message in (
        (["x:0"], "weight must be in"),
        (["x:11"], "weight must be in"),
        (["x:nan"], "weight must be in"),
        (["x:high"], "must be a number"),
        ([":2"], "has no words"),
        (["a" * (MAX_HOTWORD_CHARS + 1)], "characters"),
        ([f"word{i}" for i in range(MAX_HOTWORDS + 1)], "at most"),
    ):
        with pytest.raises(HotwordError, match=message):
            parse_hotwords(bad)
    with pytest.raises(HotwordError, match="cannot spell 'ü'"):
        ContextGraph.build(tokenizer, [Hotword("zürich")])


def test_prompt_keeps_its_uncommon_spellable_words(tokenizer) -> None:
    prompt = "Notes from the call with Kowalski and Dr. Nguyen about the Zürich office"
    expected = ["Notes", "call", "Kowalski", "Dr", "Nguyen", "office"]
    assert [hotword.phrase for hotword in prompt_hotwords(prompt, tokenizer)] == expected


def test_context_graph_rewards_whole_phrases_only(tokenizer) -> None:
    graph = ContextGraph.build(tokenizer, [Hotword("kowalski", 2.0)])
    ids = tokenizer.encode("kowalski")
    state, total = graph.start, 0.0
    for token in ids:
        state, reward = graph.step(state, token)
        assert reward == 2.0
        total += reward
    assert graph.finish(state) == 0.0  # spelled to the end: the reward stays
    # Followed by a new word, it stays; by a piece of the same word ("kowalskis"), it is taken back.
    assert graph.step(state, tokenizer.encode("the")[0])[1] == 0.0
    inside_word = next(token for token in range(tokenizer.vocab_size) if tokenizer.piece(token) == "s")
    assert not tokenizer.starts_word(inside_word)
    assert graph.step(state, inside_word)[1] == -2.0 * len(ids)
    apostrophe = next(token for token in range(tokenizer.vocab_size) if tokenizer.piece(token) == "'")
    assert graph.step(state, apostrophe)[1] == 0.0  # punctuation ends the word too: "kowalski's"
    # A match broken off halfway gives back what it earned, at once or at the end.
    half = graph.start
    for token in ids[:3]:
        half, _ = graph.step(half, token)
    assert graph.step(half, tokenizer.encode("the")[0])[1] == -6.0
    assert graph.finish(half) == -6.0


def peaky_scores(path: list[int], blank: int, vocab: int, second: dict[int, int] | None = None) -> np.ndarray:
    """Frame scores of a confident CTC output that spells `path` (one id per frame); `second` puts a token at
    -2.5 beside the best one at frames it names."""
    logits = torch.full((1, len(path), vocab), -10.0)
    for frame, token in enumerate(path):
        logits[0, frame, token] = 0.0
        if second and frame in second:
            logits[0, frame, second[frame]] = -2.5
    return frame_scores(logits, blank)[0].numpy()


def test_beam_search_without_bias_follows_a_confident_greedy_path(tokenizer) -> None:
    blank = tokenizer.blank_id
    ids = tokenizer.encode("the red cat")
    path = [blank] + [token for token in ids for token in (token, token, blank)]
    scores = peaky_scores(path, blank, tokenizer.vocab_size)
    for beam in (1, 4, 8):
        assert CTCBeamSearch(tokenizer, beam)(scores, offset=5) == token_spans(path, blank, offset=5)


def test_beam_search_recovers_a_hotword_the_frames_rank_second(tokenizer) -> None:
    blank = tokenizer.blank_id
    heard, meant = tokenizer.encode("the red cat"), tokenizer.encode("the bed cat")
    assert len(heard) == len(meant)
    path = [blank] + [token for token in heard for token in (token, blank)]
    second = {1 + 2 * i: b for i, (a, b) in enumerate(zip(heard, meant)) if a != b}
    scores = peaky_scores(path, blank, tokenizer.vocab_size, second)

    def text(graph: ContextGraph | None) -> str:
        return tokenizer.decode([span.token_id for span in CTCBeamSearch(tokenizer, 4, graph)(scores)])

    assert text(None) == "the red cat"
    assert text(ContextGraph.build(tokenizer, [Hotword("bed", 3.0)])) == "the bed cat"
    assert text(ContextGraph.build(tokenizer, [Hotword("bed", 1.0)])) == "the red cat"  # too weak to outweigh 2.5


def test_language_model_prefers_the_words_it_knows(tokenizer, tmp_path) -> None:
    pytest.importorskip("kenlm", reason="the language model needs the kenlm package")
    blank = tokenizer.blank_id
    heard, meant = tokenizer.encode("the red cat"), tokenizer.encode("the bed cat")
    path = [blank] + [token for token in heard for token in (token, blank)]
    second = {1 + 2 * i: b for i, (a, b) in enumerate(zip(heard, meant)) if a != b}
    scores = peaky_scores(path, blank, tokenizer.vocab_size, second)
    arpa = tmp_path / "lm.arpa"
    unigrams = {"<s>": -99.0, "</s>": -1.0, "<unk>": -6.0, "the": -0.7, "bed": -0.8, "cat": -0.9, "red": -5.0}
    lines = "".join(f"{log10_prob}\t{word}\t0\n" for word, log10_prob in unigrams.items())
    arpa.write_text(
        f"\\data\\\nngram 1={len(unigrams)}\nngram 2=1\n\n\\1-grams:\n{lines}\n\\2-grams:\n-0.1\t<s> the\n\n\\end\\\n"
    )
    search = CTCBeamSearch(tokenizer, 4, lm=WordLM(arpa, alpha=1.0, beta=0.0))
    assert tokenizer.decode([span.token_id for span in search(scores)]) == "the bed cat"
    with pytest.raises(LanguageModelError, match="no such file"):
        WordLM(tmp_path / "missing.arpa", 0.5, 1.0)


def test_greedy_and_beam_one_are_todays_greedy(default_model, unseen_speech) -> None:
    _, audios = unseen_speech
    greedy = default_model.transcribe(audios[:6])
    assert default_model.transcribe(audios[:6], beam_size=1) == greedy
    assert DecodingOptions().searches is False
    with pytest.raises(ValueError, match="beam_size"):
        DecodingOptions(beam_size=0)


def test_beam_search_times_words_as_greedy_decoding_does(default_model, unseen_speech) -> None:
    """A prefix's frames are those of its best single path: where beam search writes greedy decoding's words, it
    gives them greedy decoding's times."""
    _, audios = unseen_speech
    pairs = zip(default_model.transcribe(audios[:12]), default_model.transcribe(audios[:12], beam_size=4))
    same = [(greedy.words, beam.words) for greedy, beam in pairs if greedy.text == beam.text]
    assert len(same) >= 10
    for greedy_words, beam_words in same:
        assert beam_words == greedy_words


def missed_words(references: list[str], hypotheses: list[str]) -> list[list[str]]:
    """Per sentence, the words of the reference that the hypothesis lacks."""
    return [[w for w in dict.fromkeys(r.split()) if w not in h.split()] for r, h in zip(references, hypotheses)]


def test_hotwords_recover_the_words_greedy_decoding_missed(default_model, unseen_speech) -> None:
    """The unseen sentences' words that greedy decoding gets wrong, named as hotwords: most come back (issue 23:
    recall of the prompted words); an unrelated list changes the WER by at most a point."""
    texts, audios = unseen_speech
    greedy = [t.text for t in default_model.transcribe(audios)]
    missed = missed_words(texts, greedy)
    total = sum(map(len, missed))
    assert total >= 10
    biased = [
        default_model.transcribe(audio, hotwords=words, beam_size=4)[0].text if words else text
        for audio, words, text in zip(audios, missed, greedy)
    ]
    recalled = total - sum(map(len, missed_words([" ".join(m) for m in missed], biased)))
    assert recalled / total >= 0.75
    assert word_error_rate(texts, biased) < word_error_rate(texts, greedy)
    unrelated = [t.text for t in default_model.transcribe(audios, hotwords=UNRELATED, beam_size=4)]
    assert abs(word_error_rate(texts, unrelated) - word_error_rate(texts, greedy)) <= 0.01


def test_batched_and_single_biased_results_are_identical(default_model, unseen_speech) -> None:
    _, audios = unseen_speech
    options = {"hotwords": ["rabbit", "painter:2"], "beam_size": 4}
    together = default_model.transcribe(audios[:5], **options)
    assert together == [default_model.transcribe(audio, **options)[0] for audio in audios[:5]]


@pytest.mark.parametrize("kind", ["rnnt", "tdt"])
def test_transducer_boosting_and_beam(kind, small_rnnt_checkpoint, small_tdt_checkpoint, speechlike) -> None:
    """On random weights (whose tokens are nearly equally likely) a strong hotword takes over greedy decoding and
    the beam; beam 1 is greedy decoding step for step."""
    checkpoint = small_rnnt_checkpoint if kind == "rnnt" else small_tdt_checkpoint
    model = load_model(checkpoint.directory)
    features = torch.from_numpy(model.pipeline.featurizer(speechlike[1]).features[0])[None]
    encoded, lengths = model.network(features, torch.tensor([features.shape[1]]))
    assert transducer_beam_search(model.network, encoded[0], 1) == greedy_transducer(model.network, encoded, lengths)[0]
    hotword = model.tokenizer.decode(model.tokenizer.encode("hello"))
    plain = model.transcribe(speechlike[1])[0].text
    assert hotword not in plain
    for beam in (1, 4):
        assert hotword in model.transcribe(speechlike[1], hotwords=[f"{hotword}:10"], beam_size=beam)[0].text


def test_a_unigram_tokenizer_names_what_it_cannot_spell() -> None:
    """A Unigram model numbers its unknown piece instead of naming it: hotwords are checked against it too."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers.models import Unigram
    from tokenizers.pre_tokenizers import Metaspace

    from model.tokenizer import Tokenizer

    pieces = [("<unk>", 0.0), ("▁a", -1.0), ("a", -1.0), ("▁", -2.0), ("b", -2.0), ("<pad>", 0.0)]
    unigram = HFTokenizer(Unigram(pieces, unk_id=0))
    unigram.pre_tokenizer = Metaspace()
    tokenizer = Tokenizer(unigram, blank_id=5)
    assert tokenizer.unk_id == 0
    ContextGraph.build(tokenizer, [Hotword("ab a")])
    with pytest.raises(HotwordError, match="cannot spell 'é'"):
        ContextGraph.build(tokenizer, [Hotword("abé")])


def test_a_language_model_is_for_ctc_only(small_tdt_checkpoint, tmp_path) -> None:
    from model.decoding import decoding_options
    from model.stages import Decoder

    arpa = tmp_path / "lm.arpa"
    arpa.write_text("\\data\\\nngram 1=1\n\n\\1-grams:\n-1.0\t<unk>\n\n\\end\\\n")
    decoder = Decoder.from_pretrained(small_tdt_checkpoint.directory)
    with pytest.raises(LanguageModelError, match="CTC beam search only"):
        decoder.check(decoding_options(lm_path=str(arpa)))
