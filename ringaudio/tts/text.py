"""Splitting text so the first audio leaves after the first clause, not the whole paragraph (pure)."""

from __future__ import annotations

import re

_SENTENCE = re.compile(r"(?<=[.!?…])\s+|\n\s*\n")
_CLAUSE = re.compile(r"(?<=[,;:—–])\s+")


def split_text(text: str, clause_chars: int = 80) -> list[str]:
    """Sentences, and within a long sentence its clauses; empty pieces dropped.

    The first piece is kept short on purpose (a clause when the first sentence is longer than
    ``clause_chars``), so synthesis of it, and the first frame, come quickly.
    """
    pieces: list[str] = []
    for sentence in _SENTENCE.split(text):
        sentence = " ".join(sentence.split())
        if not sentence:
            continue
        if len(sentence) <= clause_chars:
            pieces.append(sentence)
            continue
        clause = ""
        for part in _CLAUSE.split(sentence):
            candidate = f"{clause} {part}".strip()
            if clause and len(candidate) > clause_chars:
                pieces.append(clause)
                clause = part
            else:
                clause = candidate
        if clause:
            pieces.append(clause)
    return pieces
