"""The five stages and the row schema each one trains on.

Pure data, no third-party imports: the controller (amigo_burst) reads it to
prepare and validate datasets, the entrypoint reads it to format rows. One
definition, so the two can never disagree about a field name.
"""

from __future__ import annotations

from dataclasses import dataclass

# Exit codes of `python -m train` (the contract with train/run.sh and the controller's worker):
EXIT_OK = 0  # done: adapter/, metrics.json, AMIGO_DONE written
EXIT_BAD_INPUT = 2  # a TrainInputError: one line on stderr, nothing trained
EXIT_BUDGET = 3  # stopped by --max-runtime-s at a step boundary: checkpoint + adapter saved
EXIT_STOPPED = 4  # SIGTERM/SIGINT (spot preemption, `amigo-burst down`): checkpoint + adapter saved at the
#                   next step boundary; `--resume auto` (and `amigo-burst launch --stage N --resume`) continues

# Written by the entrypoint beside adapter_config.json: how the adapter was trained (method, quantization,
# the base's shape). The controller reads it to keep one method for a chain of stages.
ADAPTER_META = "amigo_adapter.json"


@dataclass(frozen=True)
class StageSpec:
    number: int
    name: str
    title: str
    trainer: str  # "sft" | "dpo"
    required: tuple[str, ...]  # canonical fields every row must have (non-empty strings)
    optional: tuple[str, ...] = ()

    @property
    def fields(self) -> tuple[str, ...]:
        return self.required + self.optional


STAGES: dict[int, StageSpec] = {
    s.number: s
    for s in (
        StageSpec(1, "nl2code", "natural language -> code", "sft", ("instruction", "code")),
        StageSpec(2, "context", "code with repository context", "sft", ("context", "request", "code")),
        StageSpec(
            3, "debugging", "buggy code + error -> fix + explanation", "sft",
            ("buggy_code", "error", "fixed_code"), ("explanation",),
        ),
        StageSpec(4, "reasoning", "problem -> reasoning -> answer", "sft", ("problem", "reasoning", "answer")),
        StageSpec(5, "preference", "preference pairs (DPO)", "dpo", ("prompt", "chosen", "rejected")),
    )
}


def stage_spec(stage: int | str) -> StageSpec:
    """Look a stage up by number (1-5, int or digit string) or name; ValueError otherwise."""
    key = str(stage).strip()
    if key.isdigit() and int(key) in STAGES:
        return STAGES[int(key)]
    for spec in STAGES.values():
        if spec.name == key:
            return spec
    raise ValueError(f"unknown stage {stage!r}: expected 1-5 or one of {', '.join(s.name for s in STAGES.values())}")


def validate_row(spec: StageSpec, row: object) -> str | None:
    """Return None for a good row, else a short reason naming the field."""
    if not isinstance(row, dict):
        return f"expected a JSON object, got {type(row).__name__}"
    for field in spec.required:
        if field not in row or row[field] is None:
            return f"missing field '{field}'"
        value = row[field]
        if not isinstance(value, str):
            return f"field '{field}' must be a string, got {type(value).__name__}"
        if not value.strip():
            return f"field '{field}' is empty"
    for field in spec.optional:
        if field in row and row[field] is not None and not isinstance(row[field], str):
            return f"field '{field}' must be a string, got {type(row[field]).__name__}"
    return None


class TrainInputError(ValueError):
    """A user mistake in the entrypoint's inputs (args, config, dataset, adapter dir).

    `python -m train` prints it as one line on stderr and exits 2; nothing is trained or written.
    """
