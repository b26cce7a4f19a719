"""Left for one caller only: archsearch has no compiled kernel any more.

Tailored networks sum their proxies with torch's own operations (docs/design-choices.md, *Proxies*:
the fused C++ kernel that was here made them 0.66x as fast as the original on an AVX2-only CPU, while
torch's operations made them 3.4x as fast). ``kernel()`` stays until ``archsearch/tailor.py`` stops
calling it; then this module goes.
"""
from __future__ import annotations


def kernel() -> None:
    """There is no kernel to build: always None."""
    return None
