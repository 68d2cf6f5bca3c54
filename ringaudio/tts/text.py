"""Text before synthesis (pure): what is refused, and splitting it so the first audio leaves after the
first clause, not the whole paragraph."""

from __future__ import annotations

import re

from ..errors import TextError

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


def check_text(text: object, limit: int) -> str:
    """The text, or TextError saying why no worker should be given it (checked when it is queued,
    so the caller hears at once, not from a worker later)."""
    if not isinstance(text, str):
        raise TextError(f"text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise TextError("text is empty")
    if len(text) > limit:
        raise TextError(f"text of {len(text)} characters is over the limit of {limit}", code="text_too_long")
    if any(ord(c) < 32 and c not in "\n\t\r" for c in text) or "\x7f" in text:
        raise TextError("text contains control characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TextError(f"text contains a lone surrogate at {exc.start}: not valid Unicode") from None
    return text
