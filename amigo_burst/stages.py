"""The five stages, as the controller sees them (the definitions live in train/schema.py)."""

from __future__ import annotations

from amigo_burst.errors import UserError
from train.schema import STAGES, StageSpec, stage_spec

__all__ = ["STAGES", "StageSpec", "get_stage", "parse_stage_range"]


def get_stage(value: int | str) -> StageSpec:
    try:
        return stage_spec(value)
    except ValueError as e:
        raise UserError(str(e)) from None


def parse_stage_range(text: str) -> list[int]:
    """"1-5", "2", "1,3-4" -> sorted stage numbers; UserError for anything outside 1-5."""
    out: set[int] = set()
    for part in text.replace(" ", "").split(","):
        lo, sep, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise UserError(f"bad stage range {text!r}: use e.g. 1-5 or 2,4") from None
        if not (1 <= a <= b <= 5):
            raise UserError(f"bad stage range {text!r}: stages are 1-5")
        out.update(range(a, b + 1))
    return sorted(out)
