"""Short text for parameter counts, hours and dollars (estimate, plan and report output)."""

from __future__ import annotations

import math


def fmt_params(n: float) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def hours_text(h: float | None) -> str:
    if h is None:
        return "-"
    if h * 3600 < 1:
        return "<1 s"
    if h * 60 < 1:
        return f"{h * 3600:.0f} s"
    if h < 1:
        return f"{h * 60:.0f} min"
    return f"{h:.1f} h"


def usd_text(x: float | None) -> str:
    if x is None:
        return "-"
    if 0 < x < 0.0001:
        return "<$0.0001"
    return f"${x:.2f}" if x >= 0.01 or x == 0 else f"${x:.4f}"


def finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)
