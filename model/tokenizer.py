"""Thin wrapper over a `tokenizers` SentencePiece-style tokenizer (`tokenizer.json`)."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer as _Tokenizer

WORD_START = "\u2581"  # SentencePiece's '▁': a piece that begins a word


class TokenizerError(ValueError):
    """A tokenizer file that cannot be used with the model."""


def unknown_id(tokenizer: _Tokenizer) -> int | None:
    """The id of the piece `tokenizer` spells unknown characters with: BPE and WordPiece name it, a Unigram model
    numbers it (in its JSON only)."""
    unk = getattr(tokenizer.model, "unk_token", None)
    if unk:
        return tokenizer.token_to_id(unk)
    return json.loads(tokenizer.to_str()).get("model", {}).get("unk_id")


class Tokenizer:
    def __init__(self, tokenizer: _Tokenizer, blank_id: int) -> None:
        self._tokenizer = tokenizer
        self.blank_id = blank_id
        self._pieces = [tokenizer.id_to_token(i) or "" for i in range(tokenizer.get_vocab_size(with_added_tokens=True))]
        self._starts_word = [piece.startswith(WORD_START) for piece in self._pieces]
        # Pieces that end the word before them: a new word's, or punctuation ("Kowalski," ends "Kowalski").
        self.ends_word = [start or not piece[:1].isalnum() for start, piece in zip(self._starts_word, self._pieces)]
        self.unk_id = unknown_id(tokenizer)  # what encode gives for what it cannot spell
        self.cased = any(piece != piece.lower() for piece in self._pieces if not piece.startswith("<"))

    @classmethod
    def from_file(cls, path: str | Path, blank_id: int) -> Tokenizer:
        try:
            tokenizer = _Tokenizer.from_file(str(path))
        except Exception as err:  # tokenizers raises a bare Exception for a bad file
            raise TokenizerError(f"{path}: cannot load tokenizer: {err}") from None
        return cls(tokenizer, blank_id)

    @property
    def vocab_size(self) -> int:
        return len(self._pieces)

    def piece(self, token_id: int) -> str:
        return self._pieces[token_id]

    def starts_word(self, token_id: int) -> bool:
        return self._starts_word[token_id]

    def first_piece(self, piece: str) -> int:
        """The id of the first of this tokenizer's pieces that spell another tokenizer's `piece` (`<unk>`'s if
        none do)."""
        tokens = self._tokenizer.model.tokenize(piece)
        return tokens[0].id if tokens else self.unk_id

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, token_ids: list[int]) -> str:
        """Ids (blank already removed) -> text; special tokens are dropped."""
        return self._tokenizer.decode(token_ids, skip_special_tokens=True)

    def save(self, path: str | Path) -> None:
        self._tokenizer.save(str(path))
