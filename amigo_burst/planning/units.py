"""Short text for parameter counts, hours and dollars (estimate, plan and report output)."""

from __future__ import annotations

import math


def fmt_params(n: float) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def hours_text(h: float | None) -> str:
    """0.4 s, 42 s, 12 min, 3.5 h, 461 h: seconds for short runs, never "0.00"."""
    if h is None:
        return "-"
    s = h * 3600
    if s < 10:
        return f"{s:.1f} s" if s >= 0.05 else "<0.1 s"
    if s < 60:
        return f"{s:.0f} s"
    if h < 1:
        return f"{h * 60:.0f} min"
    return f"{h:.1f} h" if h < 100 else f"{h:,.0f} h"


def usd_text(x: float | None) -> str:
    """$0 when free, two significant figures under a dollar ($0.0031, $0.37), cents above."""
    if x is None:
        return "-"
    if x == 0:
        return "$0"
    if x < 0.0001:
        return "<$0.0001"
    if x < 1:
        return f"${sig(x, 2)}"
    return f"${x:,.2f}"


def sig(x: float, n: int = 2) -> str:
    """X to N significant figures, no exponent: 0.0031234 -> 0.0031, 12.345 -> 12."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    digits = max(0, n - 1 - math.floor(math.log10(abs(x))))
    return f"{round(x, digits):.{digits}f}"


def finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)
