"""The estimator as `launch` and `--cloud auto` use it (the pure parts live in estimate/plan)."""

from __future__ import annotations


def choose(cfg, stage: int, max_usd: float | None) -> tuple[str, str]:
    """--cloud auto: the cheapest target that fits within budget and deadline, with the reason."""
    from amigo_burst.cli_estimate import auto_target, runs_for

    return auto_target(cfg, stage, runs_for(cfg), budget_usd=max_usd)


def estimate_for_launch(cfg, stage: int, target, tokens: int, opts) -> dict:
    """The estimate recorded with the run (calibration later compares it with what happened).

    None for a target with no GPU in its YAML (a CPU-only Slurm partition): there is no GPU row to
    estimate against, and refusing the launch for that would be wrong.
    """
    if not target.is_local and not target.accelerator:
        return None
    from amigo_burst.cli_estimate import estimate_for_target, runs_for

    return estimate_for_target(cfg, stage, target.name, tokens, runs_for(cfg))
