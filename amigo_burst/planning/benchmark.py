"""What a HumanEval score means: its 95% interval, a change between two runs with its interval, whether
that change is inside the noise, and the settings key that says which runs compare. Pure.

    wilson(41, 164)                         -> (0.189, 0.321): pass@1 0.250's 95% interval
    change(new, old)                        -> Change(delta, low, high, n, noise) | None (not comparable)
    regressed(change(new, parent), 0.0)     -> True when the drop is beyond the noise (and the margin)

Two runs compare when they answered the same problems with the same settings (`settings_key`: the base,
the benchmark's limit, seed, answer length, prompt style and how the base was loaded) and neither stopped
early (`partial`: a sample of the problems, never set against a full run). With the per-problem
outcomes of both runs (the summaries' `scored` and `passed_tasks`) the interval is Newcombe's for paired
proportions (method 10: Wilson intervals of both, combined through the correlation of the pairs), the
same problems answered twice; without them, the same formula with no correlation (unpaired).
On 164 problems a pass@1 near 0.3 has a 95% interval of about +-0.07: a change of 1-3 problems is noise.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

Z95 = 1.959964  # the normal quantile of a two-sided 95% interval
SEED = 0  # the problems' order (train/humaneval.py --seed): the same for every run of a project


def settings_key(base: str, limit: int | None, max_new_tokens: int, method: str, prompt: str = "auto",
                 seed: int = SEED) -> str:
    """Which runs answered the same problems the same way: 12 hex digits over the settings."""
    text = json.dumps({"benchmark": "humaneval", "base": base, "limit": limit or None, "seed": seed,
                       "max_new_tokens": max_new_tokens, "prompt": prompt, "method": method}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of k successes in n (good at 0 and n, unlike k/n +- z*se)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, mid - half), min(1.0, mid + half)


@dataclass(frozen=True)
class Change:
    delta: float  # new pass@1 - old pass@1 (on the problems both answered)
    low: float  # 95% interval of the change
    high: float
    n: int  # problems compared
    paired: bool

    @property
    def noise(self) -> bool:
        """The interval holds 0: the data cannot tell this change from chance."""
        return self.low <= 0 <= self.high

    def to_record(self) -> dict:
        return {"delta": round(self.delta, 4), "low": round(self.low, 4), "high": round(self.high, 4),
                "n": self.n, "paired": self.paired, "noise": self.noise}

    def text(self) -> str:
        tail = "noise" if self.noise else "beyond the noise"
        return f"{self.delta:+.3f} (95% CI {self.low:+.3f}..{self.high:+.3f}, {tail})"


def newcombe(a: int, b: int, c: int, d: int, z: float = Z95) -> tuple[float, float, float]:
    """(delta, low, high) of p1 - p2 for paired outcomes: a both passed, b only the new, c only the old,
    d neither (Newcombe 1998, method 10). With b = c = 0 and a + d = n the interval still has width."""
    n = a + b + c + d
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson(a + b, n, z)
    l2, u2 = wilson(a + c, n, z)
    den = (a + b) * (c + d) * (a + c) * (b + d)
    phi = (a * d - b * c) / math.sqrt(den) if den else 0.0
    delta = p1 - p2
    lo = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    hi = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return delta, max(-1.0, delta - lo), min(1.0, delta + hi)


def unpaired(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> tuple[float, float, float]:
    """(delta, low, high) of k1/n1 - k2/n2, independent samples (Newcombe's method 10 for two proportions)."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    delta = p1 - p2
    return delta, delta - math.hypot(p1 - l1, u2 - p2), delta + math.hypot(u1 - p1, p2 - l2)


def passed(he: dict) -> int:
    """Problems passed (older summaries carry only pass@1)."""
    return he["passed"] if he.get("passed") is not None else round((he.get("pass_at_1") or 0) * he["problems"])


def comparable(new: dict, old: dict) -> str | None:
    """Why two HumanEval summaries cannot be compared, or None when they can."""
    if not new.get("problems") or not old.get("problems"):
        return "no score"
    if new.get("partial") or old.get("partial"):
        return "partial run: a sample of the problems, not set against a full run"
    if new.get("key") and old.get("key") and new["key"] != old["key"]:
        return "different benchmark settings"
    for k in ("limit", "seed", "max_new_tokens", "prompt"):
        if k in new and k in old and new[k] != old[k]:
            return f"different {k.replace('_', ' ')}"
    return None


def change(new: dict, old: dict) -> Change | None:
    """new vs old (HumanEval summaries), or None when they do not compare (see comparable)."""
    if comparable(new, old):
        return None
    if "scored" in new and "scored" in old:
        common = set(new["scored"]) & set(old["scored"])
        if not common:
            return None
        pn, po = set(new["passed_tasks"]) & common, set(old["passed_tasks"]) & common
        a, b, c = len(pn & po), len(pn - po), len(po - pn)
        delta, low, high = newcombe(a, b, c, len(common) - a - b - c)
        return Change(delta, low, high, len(common), True)
    delta, low, high = unpaired(passed(new), new["problems"], passed(old), old["problems"])
    return Change(delta, low, high, min(new["problems"], old["problems"]), False)


def regressed(ch: Change | None, margin: float = 0.0) -> bool:
    """The drop is beyond the noise: the whole 95% interval lies below -margin."""
    return ch is not None and ch.high < -margin
