"""Parsing sizes and durations as users write them."""
from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?[bB]?)\s*$")
_MULT = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: object) -> int:
    """``"512M"`` → 536870912.  Suffixes K, M, G, T (powers of 1024), with an
    optional ``i``/``B``; a bare number is bytes.  Raises ``ValueError``."""
    if isinstance(text, bool):
        raise ValueError(f"expected a size like 512M, got {text!r}")
    if isinstance(text, int):
        value = text
    else:
        m = _SIZE.match(str(text))
        if not m:
            raise ValueError(f"expected a size like 512M or 2G, got {text!r}")
        value = int(float(m.group(1)) * _MULT[m.group(2).lower()])
    if value <= 0:
        raise ValueError(f"expected a positive size, got {text!r}")
    return value
