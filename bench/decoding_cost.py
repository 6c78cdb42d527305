"""What decoding costs per second of audio: greedy against beam search (4 and 8), with and without hotwords and a
word language model, beside the encoder's own cost; and what the hotwords do to the words.

    python bench/decoding_cost.py            # the embedded model on 36 unseen sentences (about 2 minutes)

The encoder runs once per clip (its output, best ids and frame scores, is kept); each decoding then runs over all
clips in this process, timed by CPU time. The hotwords are the words greedy decoding missed in each clip (what a
user who knows the domain would name) and, separately, an unrelated list of names none of the clips contains.
The language model is a bigram model of the sentence generator's text (written to a temporary ARPA file).
Last, sentences around rare words: their recall, and the bonus per token each would need to be written, against
what unrelated names need where they were not said.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from model import Parakeet, load_model
from model.beam import frame_scores
from model.biasing import COMMON_WORDS
from model.decoding import DecodingOptions, decoding_options
from model.stages import Decoder
from model.windows import Window
from recipe.metrics import word_error_rate
from recipe.sentences import sentence_pool
from recipe.synthesize import SEEN_VOICES, synthesize, unseen_speech

UNRELATED = ("kowalski", "reykjavik", "kubernetes", "albuquerque", "ibuprofen", "zanzibar", "okonkwo", "nguyen")
# Sentences around rare words (names, places, terms) that neither the generator nor the tokenizer's text holds.
RARE = (
    ("we met kowalski in the lobby yesterday", "kowalski"),
    ("the flight to reykjavik leaves at noon", "reykjavik"),
    ("please ask doctor nguyen about the results", "nguyen"),
    ("the server runs kubernetes in the basement", "kubernetes"),
    ("my sister moved to albuquerque last spring", "albuquerque"),
    ("the patient was given ibuprofen and rest", "ibuprofen"),
    ("zanzibar is an island off the coast", "zanzibar"),
    ("professor okonkwo teaches at the college", "okonkwo"),
    ("the invoice from siemens arrived late", "siemens"),
    ("our meeting with gupta moved to friday", "gupta"),
)
REPEATS = 3  # each decoding's cost is the least of this many runs


def write_bigram_arpa(sentences: list[str], path: Path) -> None:
    """A bigram ARPA model of `sentences`: maximum likelihood, 0.2 of each history's mass backed off."""
    unigrams, bigrams = Counter(), Counter()
    for sentence in sentences:
        words = ["<s>", *sentence.split(), "</s>"]
        unigrams.update(words)
        bigrams.update(zip(words, words[1:]))
    total = sum(unigrams.values())
    lines = ["\\data\\", f"ngram 1={len(unigrams) + 1}", f"ngram 2={len(bigrams)}", "", "\\1-grams:"]
    lines.append(f"{math.log10(0.5 / total):.4f}\t<unk>\t0")
    lines += [f"{math.log10(count / total):.4f}\t{word}\t{math.log10(0.2):.4f}" for word, count in unigrams.items()]
    lines += ["", "\\2-grams:"]
    lines += [f"{math.log10(0.8 * count / unigrams[a]):.4f}\t{a} {b}" for (a, b), count in bigrams.items()]
    path.write_text("\n".join([*lines, "", "\\end\\", ""]))


def main() -> None:
    torch.set_num_threads(1)
    model = load_model()
    texts, audios = unseen_speech(36)
    seconds = sum(len(audio) for audio in audios) / 16000
    encoded, started = [], time.process_time()
    for audio in audios:
        features = torch.from_numpy(model.pipeline.featurizer(audio).features[0])[None]
        with torch.inference_mode():
            logits, _ = model.network(features, torch.tensor([features.shape[1]]))
        encoded.append((logits.argmax(-1)[0].int().numpy(), frame_scores(logits, model.tokenizer.blank_id)[0].numpy()))
    encoder_ms = 1000 * (time.process_time() - started) / seconds
    decoder: Decoder = model.pipeline.decoder
    greedy = [decoder([Window(0, 0, math.inf)], [ids], 0.0).text for ids, _ in encoded]
    missed = [[w for w in t.split() if w not in g.split() and w not in COMMON_WORDS] for t, g in zip(texts, greedy)]

    def run(options_of: list[DecodingOptions]) -> tuple[float, list[str]]:
        costs = []
        for _ in range(REPEATS):
            started = time.process_time()
            outputs = [
                decoder([Window(0, 0, math.inf)], [scores if options.searches else ids], 0.0, options).text
                for (ids, scores), options in zip(encoded, options_of)
            ]
            costs.append(1000 * (time.process_time() - started) / seconds)
        return min(costs), outputs

    with tempfile.TemporaryDirectory() as directory:
        arpa = Path(directory) / "bigram.arpa"
        write_bigram_arpa(sentence_pool(24000, seed=0), arpa)
        print(f"{len(audios)} clips, {seconds:.0f} s of audio; encoder {encoder_ms:.2f} CPU-ms per second of audio")
        print("| decoding | CPU-ms per s of audio | × encoder | WER | recall of missed words |")
        print("|---|---|---|---|---|")
        for beam in (1, 4, 8):
            for hotwords in ("none", "missed", "unrelated"):
                for lm in (None, str(arpa)):
                    if beam == 1 and lm:
                        continue
                    lists = {"none": [[]] * len(texts), "missed": missed, "unrelated": [list(UNRELATED)] * len(texts)}
                    options = [decoding_options(words, beam, lm) for words in lists[hotwords]]
                    cost, outputs = run(options)
                    found = sum(w in o.split() for words, o in zip(missed, outputs) for w in words)
                    name = f"beam {beam}, hotwords {hotwords}" + (", bigram LM" if lm else "")
                    wer = 100 * word_error_rate(texts, outputs)
                    recall = f"{found}/{sum(map(len, missed))}"
                    print(f"| {name} | {cost:.2f} | {cost / encoder_ms:.2f} | {wer:.1f}% | {recall} |")
    rare_words(model)


def relative_log_probs(model: Parakeet, audio) -> np.ndarray:
    """(frames, vocab) log-probabilities less each frame's best: 0 on the greedy path, negative elsewhere."""
    features = torch.from_numpy(model.pipeline.featurizer(audio).features[0])[None]
    with torch.inference_mode():
        log_probs = model.network(features, torch.tensor([features.shape[1]]))[0].log_softmax(-1)[0].numpy()
    return log_probs - log_probs.max(-1, keepdims=True)


def spotting_margin(model: Parakeet, relative: np.ndarray, word: str) -> float:
    """How far below the greedy path, per token, the best CTC alignment of `word` to any stretch of the frames
    lies (nats): the bonus per token a hotword would need to be written there."""
    ids, blank = model.tokenizer.encode(word), model.tokenizer.blank_id
    states = [blank] + [state for token in ids for state in (token, blank)]
    best, previous = -math.inf, np.full(len(states), -math.inf)
    for frame in relative:
        current = np.full(len(states), -math.inf)
        for s, token in enumerate(states):
            reach = [previous[s], previous[s - 1] if s else -math.inf, 0.0 if s < 2 else -math.inf]
            if s > 1 and token != blank and token != states[s - 2]:
                reach.append(previous[s - 2])
            current[s] = max(reach) + frame[token]
        previous, best = current, max(best, current[-1], current[-2])
    return -best / len(ids)


def rare_words(model: Parakeet) -> None:
    """Recall of rare words named as hotwords, in sentences spoken by the training voices."""
    audios = [synthesize(text, SEEN_VOICES[i % len(SEEN_VOICES)]) for i, (text, _) in enumerate(RARE)]
    print(f"\n{len(RARE)} sentences around rare words; recall of the word, and what the model wrote\n")
    print("| decoding | recall | transcripts |")
    print("|---|---|---|")
    for name, weight, beam in (("greedy", None, 1), ("hotword, beam 4", "", 4), ("hotword:10, beam 8", ":10", 8)):
        texts = [
            model.transcribe(audio, hotwords=[] if weight is None else [word + weight], beam_size=beam)[0].text
            for audio, (_, word) in zip(audios, RARE)
        ]
        found = sum(word in text.split() for text, (_, word) in zip(texts, RARE))
        print(f"| {name} | {found}/{len(RARE)} | {'; '.join(texts[:4])}; ... |")
    # Could any bonus write the rare words without writing unrelated ones where they were not said? Compare the
    # bonus each needs where it was said with what the closest unrelated name needs in sentences without it.
    said = [spotting_margin(model, relative_log_probs(model, a), w) for a, (_, w) in zip(audios, RARE)]
    _, others = unseen_speech(12)
    unsaid = [min(spotting_margin(model, relative_log_probs(model, a), w) for w in UNRELATED) for a in others]
    print(
        f"\nbonus per token needed (nats): the rare word where it was said {min(said):.1f}-{max(said):.1f}; "
        f"the closest unrelated name in 12 unseen sentences without it {min(unsaid):.1f}-{max(unsaid):.1f}"
    )


if __name__ == "__main__":
    main()
