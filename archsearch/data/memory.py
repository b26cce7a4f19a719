"""Memory: how much the preprocessed data may take, and how much a run took at its peak.

``memory_budget`` decides whether an ImageFolder is preprocessed into memory or streamed from disk:
an explicit ``max_memory`` wins, then the environment variable ``ARCHSEARCH_MAX_MEMORY`` (``512M``,
``2G``, ``1.5GiB``, plain bytes), else half of the memory the kernel reports available
(``MemAvailable`` in /proc/meminfo) -- the other half stays for the network, its activations and
the DataLoader workers.
"""
from __future__ import annotations

import os
import re
import resource
import sys

from archsearch.errors import UserError

ENV_VAR = "ARCHSEARCH_MAX_MEMORY"

# binary multiples: 1K = 1024 bytes, as memory is usually counted
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_memory(text: str | int) -> int:
    """Bytes in ``text``: ``1048576``, ``512K``, ``512M``, ``2G``, ``1.5GiB``, ``2gb``, ``1T``.

    Units are binary (K = 1024). Raises :class:`UserError` for anything else or a negative value.
    """
    if isinstance(text, bool):
        raise UserError(f"memory size {text!r} is not a size; give e.g. 512M or 2G")
    if isinstance(text, int):
        if text < 0:
            raise UserError(f"memory size {text} is negative; give e.g. 512M or 2G")
        return text
    m = _SIZE.match(str(text))
    if not m:
        raise UserError(f"memory size {text!r} is not a size; give bytes or a number with K, M, G "
                        f"or T, e.g. 512M or 2G")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def available_memory() -> int | None:
    """Bytes the kernel says can be allocated without swapping (``MemAvailable``), if it says."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def memory_budget(max_memory: int | str | None = None) -> int:
    """Bytes the preprocessed data may take in memory.

    ``max_memory`` (bytes, or a string as :func:`parse_memory` reads) if given; else
    ``$ARCHSEARCH_MAX_MEMORY`` if set; else half of ``MemAvailable`` (no limit where the machine
    does not say).
    """
    if max_memory is not None:
        try:
            return parse_memory(max_memory)
        except UserError as exc:
            raise UserError(f"--max-memory: {exc}") from None
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        try:
            return parse_memory(env)
        except UserError as exc:
            raise UserError(f"{ENV_VAR}={env}: {exc}") from None
    avail = available_memory()
    return sys.maxsize if avail is None else avail // 2


def peak_rss_bytes() -> int:
    """Peak resident memory in bytes of this process or of its largest finished child (DataLoader
    workers, subprocesses), whichever is larger."""
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # Linux: KiB; macOS: bytes
