"""Numbers as users type them on the command line: counts (`50e6`, `50M`, `50_000_000`) and budgets.

Shared vocabulary: the CLI and the lifecycle both check their numbers through here, so every
command accepts the same spellings and refuses the same nonsense (nan, inf, negative) in one line.
"""

from __future__ import annotations

import math
import re

from amigo_burst.errors import UserError

_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}
_COUNT = re.compile(r"^\s*([0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][+-]?[0-9]+)?)\s*([kKmMbBgGtT]?)\s*$")


def parse_count(text: str | int, what: str = "value") -> int:
    """'50e6', '50M', '2.5k', '50_000_000', '1000' -> an int >= 0 (UserError otherwise).

    A fractional result (1.5e0) is refused: a count of tokens or rows is whole."""
    if isinstance(text, int) and not isinstance(text, bool):
        value: float = text
    else:
        m = _COUNT.match(str(text))
        if not m:
            raise UserError(f"{what}: {text!r} is not a count (e.g. 50000000, 50_000_000, 50e6 or 50M)")
        value = float(m.group(1).replace("_", "")) * _SUFFIX[m.group(2).lower()]
    if not math.isfinite(value) or value != int(value) or value < 0:
        raise UserError(f"{what}: {text!r} is not a whole number >= 0")
    return int(value)


def check_positive(value: float | None, what: str) -> float | None:
    """None passes; a finite number > 0 passes; nan, inf, 0 and negatives are refused in one line."""
    if value is None:
        return None
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"{what} must be a number > 0 (got {value})")
    return value
