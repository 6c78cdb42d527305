"""Training a SentencePiece-style tokenizer with the `tokenizers` library, laid out like the official ones:
BPE pieces with '▁' word starts, `<unk>` first and the CTC blank `<pad>` as the very last id."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from model.config import blank_id_for

UNK, BLANK = "<unk>", "<pad>"


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """BPE over `texts`; the result has exactly `vocab_size` ids, the last being the blank."""
    tokenizer = Tokenizer(models.BPE(unk_token=UNK, fuse_unk=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    pieces = blank_id_for(vocab_size)  # every id before the blank's
    trainer = trainers.BpeTrainer(vocab_size=pieces, special_tokens=[UNK], show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    learned = tokenizer.get_vocab_size()
    if learned != pieces:
        raise ValueError(f"the text supports only {learned} pieces, fewer than the {pieces} asked for")
    tokenizer.add_special_tokens([AddedToken(BLANK, special=True, normalized=False)])
    return tokenizer
