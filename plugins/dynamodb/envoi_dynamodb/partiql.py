"""The table a DynamoDB PartiQL statement reads or writes, where it can be read.

DynamoDB's PartiQL has four statement forms, each naming one table right after a keyword::

    SELECT ... FROM "orders"[."by_date"] [WHERE ...]
    INSERT INTO "orders" VALUE {...}
    UPDATE "orders" SET ... [WHERE ...]
    DELETE FROM "orders" WHERE ...

and ``EXISTS(SELECT ... FROM "orders" WHERE ...)`` as a condition check in ExecuteTransaction.
A table is a double-quoted identifier (``""`` escapes a quote) or a bare one
(``[A-Za-z_][A-Za-z0-9_]*``). Only the tokens up to the table are looked at; string literals
(``'...'``) and quoted identifiers are skipped whole, so a ``FROM`` inside them is not taken for
the keyword. Anything else (an empty statement, another verb, no identifier where the table
belongs) is unreadable: ``None``, which the filter counts as ``table_missing``.

Pure functions on ``str``: no I/O, unit-tested and fuzzed with random text.
"""

from __future__ import annotations

import re

# One token: whitespace (skipped), a quoted identifier, a string literal, a bare word, or any
# other single character (an unterminated quote is such a character, never an identifier).
_TOKEN = re.compile(r"""
    \s+
  | "(?P<quoted>(?:[^"]|"")*)"
  | '(?:[^']|'')*'
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<other>.)
""", re.VERBOSE | re.DOTALL)

# Statements longer than this are not tokenised (a table name comes in the first few tokens of
# any statement DynamoDB accepts; its own limit on a statement is 8 KiB).
MAX_STATEMENT = 8192


def _tokens(statement: str) -> list[tuple[str, str]]:
    """(kind, text) pairs: kind ``id`` (quoted identifier), ``word`` or ``other``."""
    out: list[tuple[str, str]] = []
    pos, end = 0, len(statement)
    while pos < end:
        m = _TOKEN.match(statement, pos)
        if m is None:  # cannot happen (the last branch takes any character); be safe
            break
        pos = m.end()
        if m.group("quoted") is not None:
            out.append(("id", m.group("quoted").replace('""', '"')))
        elif m.group("word") is not None:
            out.append(("word", m.group("word")))
        elif m.group("other") is not None:
            out.append(("other", m.group("other")))
    return out


# Keywords that can follow the verb: a bare one where the table belongs means there is none.
_KEYWORDS = frozenset({"SET", "REMOVE", "WHERE", "VALUE", "FROM", "INTO", "SELECT"})


def _identifier(tokens: list[tuple[str, str]], i: int) -> str | None:
    if i >= len(tokens):
        return None
    kind, text = tokens[i]
    if kind == "id" and text:
        return text
    if kind == "word" and text.upper() not in _KEYWORDS:
        return text
    return None


def statement_table(statement: str) -> str | None:
    """The table ``statement`` names, or None when it cannot be read."""
    if not statement or len(statement) > MAX_STATEMENT:
        return None
    tokens = _tokens(statement)
    if not tokens or tokens[0][0] != "word":
        return None
    verb = tokens[0][1].upper()
    if verb in ("SELECT", "DELETE", "EXISTS"):
        for i, (kind, text) in enumerate(tokens):
            if kind == "word" and text.upper() == "FROM":
                return _identifier(tokens, i + 1)
        return None
    if verb == "INSERT":
        if len(tokens) > 1 and tokens[1][0] == "word" and tokens[1][1].upper() == "INTO":
            return _identifier(tokens, 2)
        return None
    if verb == "UPDATE":
        return _identifier(tokens, 1)
    return None
