"""Notes a user should read once: which weights file was read, why a library's compiled operators are
missing, which modules were kept whole. Each distinct note goes to stderr once per process."""
from __future__ import annotations

import sys

_said: set[str] = set()


def note(message: str) -> None:
    """Print ``archsearch: note: MESSAGE`` on stderr, unless this very note was printed before."""
    if message not in _said:
        _said.add(message)
        print(f"archsearch: note: {message}", file=sys.stderr, flush=True)
