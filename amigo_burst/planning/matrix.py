"""Stage x target: what fits where, how long, what it costs; the three strategies; --cloud auto.

Pure: targets, stages, GPU specs and prices come in as data. Each StageInput carries its budget
(max_usd, max_hours) already resolved by the planner (amigo_burst/planner.py: the one budget rule).

    all local   every stage on the laptop (if it fits)
    all cloud   every stage on [targets].cloud
    hybrid      stage 1 on the laptop, stages 2-5 on [targets].cloud (the original analysis)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from amigo_burst.planning.estimate import (
    Estimate,
    SetupCost,
    Workload,
    estimate,
    largest_fit,
    max_micro_batch,
)
from amigo_burst.planning.hardware import ALL_LINEAR, GpuSpec, ModelArch
from amigo_burst.planning.units import hours_text, usd_text

GLOBAL_BATCH = 16  # sequences per optimizer step when grad_accum is "auto": micro x accum >= 16


@dataclass(frozen=True)
class TargetInfo:
    name: str
    accelerator: str | None
    gpu_name: str | None  # gpus.csv row; None: not estimable (no GPU in the table)
    usd_per_hour: float | None
    local: bool = False
    price_note: str = ""


@dataclass(frozen=True)
class StageInput:
    number: int
    name: str
    trainer: str  # sft | dpo
    seq_len: int
    micro_batch: int | str = "auto"
    grad_accum: int | str = "auto"
    tokens: int | None = None
    epochs: float = 1.0
    max_usd: float | None = None
    max_hours: float | None = None


@dataclass(frozen=True)
class Cell:
    stage: int
    target: str
    local: bool
    fits: bool
    method: str
    micro_batch: int
    grad_accum: int
    hours: float | None
    usd: float | None
    peak_vram_gib: float
    memory_gib: float
    estimate: Estimate | None
    reason: str = ""

    @property
    def usd_per_hour(self) -> float | None:
        return self.estimate.usd_per_hour if self.estimate else None

    def to_record(self) -> dict:
        """What a run record keeps of its estimate (calibration and report read these keys):
        Estimate.to_dict() plus the plan's choices for the cell."""
        d = self.estimate.to_dict() if self.estimate else {"fits": False, "usd": None, "hours": None,
                                                            "usd_per_hour": None}
        return d | {"method": self.method, "micro_batch": self.micro_batch, "grad_accum": self.grad_accum,
                    "reason": self.reason, "target": self.target}


@dataclass(frozen=True)
class Strategy:
    name: str
    targets: dict[int, str]
    hours: float | None
    usd: float | None
    feasible: bool
    note: str = ""


@dataclass(frozen=True)
class Plan:
    cells: list[Cell]
    recommended: dict[int, tuple[str | None, str]]
    strategies: list[Strategy]
    local_note: str = ""
    warnings: list[str] = field(default_factory=list)


def plan_cell(arch: ModelArch, target: TargetInfo, gpu: GpuSpec | None, stage: StageInput, *, method: str = "auto",
              rank: int = 16, target_modules: tuple[str, ...] = ALL_LINEAR, calibration: dict | None = None,
              download_gbit_s: float = 1.0, lora_dropout: bool = True) -> Cell:
    """One stage on one target: lora if it fits (faster, no quantisation error), else qlora."""
    if gpu is None:
        return Cell(stage.number, target.name, target.local, False, "-", 0, 0, None, None, 0.0, 0.0, None,
                    f"no GPU spec for {target.accelerator or 'a CPU-only target'}")
    setup = SetupCost() if target.local else SetupCost.cloud(download_gbit_s)
    methods = [method] if method in ("lora", "qlora") else ["lora", "qlora"]
    chosen = None
    for m in methods:
        w = Workload(m, stage.seq_len, 1, tokens=stage.tokens, epochs=stage.epochs, rank=rank,
                     target_modules=target_modules, trainer=stage.trainer, lora_dropout=lora_dropout)
        mb = stage.micro_batch if isinstance(stage.micro_batch, int) else max_micro_batch(arch, gpu, w, calibration,
                                                                                           limit=GLOBAL_BATCH)
        e = estimate(arch, gpu, replace(w, micro_batch=max(mb, 1)), calibration,
                     usd_per_hour=target.usd_per_hour, setup=setup)
        chosen = (m, max(mb, 1), e)
        if e.fits:
            break
    m, mb, e = chosen
    accum = stage.grad_accum if isinstance(stage.grad_accum, int) else max(1, math.ceil(GLOBAL_BATCH / mb))
    return Cell(stage.number, target.name, target.local, e.fits, m, mb, accum, e.hours, e.usd, e.peak_vram_gib,
                gpu.memory_gib, e, e.reason)


def within(cell: Cell, budget_usd: float | None, deadline_hours: float | None) -> str:
    """"" if the cell is acceptable, else why not."""
    if not cell.fits:
        return f"does not fit ({cell.reason})"
    if budget_usd is not None and cell.usd is not None and cell.usd > budget_usd:
        return f"{usd_text(cell.usd)} over the ${budget_usd:g} budget"
    if deadline_hours is not None and cell.hours is not None and cell.hours > deadline_hours:
        return f"{hours_text(cell.hours)} over the {deadline_hours:g} h deadline"
    return ""


def choose_target(cells: list[Cell], budget_usd: float | None = None,
                  deadline_hours: float | None = None) -> tuple[str | None, str]:
    """The cheapest cell that fits within budget and deadline (ties: the faster), with the reason.

    Without token counts (hours unknown) the cheapest $/h that fits wins.
    """
    ok = [c for c in cells if not within(c, budget_usd, deadline_hours)]
    rejected = [f"{c.target}: {within(c, budget_usd, deadline_hours)}" for c in cells if c not in ok]
    if not ok:
        return None, "no target fits within the limits — " + "; ".join(rejected)

    def rate(c: Cell) -> float:
        return c.estimate.usd_per_hour if c.estimate and c.estimate.usd_per_hour is not None else math.inf

    def key(c: Cell):
        return (c.usd if c.usd is not None else math.inf, rate(c), c.hours if c.hours is not None else math.inf)

    best = min(ok, key=key)
    cost = (f"{usd_text(best.usd)}, {hours_text(best.hours)}" if best.usd is not None and best.hours is not None
            else f"${rate(best):.3f}/h")
    why = f"cheapest that fits ({best.method}, micro-batch {best.micro_batch}): {cost}"
    others = [f"{c.target} {usd_text(c.usd)}" for c in sorted(ok, key=key)[1:] if c.usd is not None]
    if others:
        why += "; next: " + ", ".join(others[:3])
    if rejected:
        why += "; skipped " + "; ".join(rejected)
    return best.target, why


def _strategy(name: str, assign: dict[int, str], cells: dict[tuple[int, str], Cell]) -> Strategy:
    picked = [cells.get((s, t)) for s, t in assign.items()]
    missing = [f"stage {s} on {t}" for (s, t), c in zip(assign.items(), picked, strict=False) if c is None or not c.fits]
    hours = [c.hours for c in picked if c is not None]
    usd = [c.usd for c in picked if c is not None]
    total_h = sum(hours) if hours and None not in hours else None
    total_usd = sum(usd) if usd and None not in usd else None
    note = ("does not fit: " + ", ".join(missing)) if missing else ""
    return Strategy(name, assign, total_h, total_usd, not missing, note)


def build_plan(arch: ModelArch, stages: list[StageInput], targets: list[TargetInfo], gpus: dict[str, GpuSpec], *,
               method: str = "auto", rank: int = 16, target_modules: tuple[str, ...] = ALL_LINEAR,
               calibration: dict | None = None, budget_usd: float | None = None,
               deadline_hours: float | None = None, local_target: str | None = None,
               cloud_target: str | None = None, download_gbit_s: float = 1.0, lora_dropout: bool = True) -> Plan:
    cells: dict[tuple[int, str], Cell] = {}
    for st in stages:
        for t in targets:
            cells[(st.number, t.name)] = plan_cell(arch, t, gpus.get(t.gpu_name or ""), st, method=method, rank=rank,
                                                   target_modules=target_modules, calibration=calibration,
                                                   download_gbit_s=download_gbit_s, lora_dropout=lora_dropout)
    recommended = {}
    for st in stages:
        row = [c for (s, _), c in cells.items() if s == st.number]
        recommended[st.number] = choose_target(row, st.max_usd, st.max_hours)
    local = local_target or next((t.name for t in targets if t.local), None)
    cloud = cloud_target or next((t.name for t in targets if not t.local), None)
    strategies = []
    if local:
        strategies.append(_strategy("all local", {s.number: local for s in stages}, cells))
    if cloud:
        strategies.append(_strategy("all cloud", {s.number: cloud for s in stages}, cells))
    if local and cloud:
        strategies.append(_strategy("hybrid", {s.number: (local if s.number == 1 else cloud) for s in stages}, cells))
    warnings = []
    for s in strategies:
        if budget_usd is not None and s.usd is not None and s.usd > budget_usd:
            warnings.append(f"{s.name}: ${s.usd:.2f} exceeds the ${budget_usd:g} budget")
        if deadline_hours is not None and s.hours is not None and s.hours > deadline_hours:
            warnings.append(f"{s.name}: {s.hours:.1f} h exceeds the {deadline_hours:g} h deadline")
    local_note = ""
    lt = next((t for t in targets if t.name == local), None)
    if lt is not None and gpus.get(lt.gpu_name or "") is not None and stages:
        misfits = [c for c in cells.values() if c.target == lt.name and not c.fits]
        if misfits:
            g = gpus[lt.gpu_name]
            st = min(stages, key=lambda s: s.seq_len)
            w = Workload("qlora", st.seq_len, 1, rank=rank, target_modules=target_modules, trainer=st.trainer)
            lf = largest_fit(arch, g, w, calibration)
            what = f"{lf.model} ({lf.model_params / 1e9:.1f}B)" if lf.model else "no preset model"
            seq = (f"{arch.name} fits only up to seq {lf.seq_len}" if lf.seq_len
                   else f"{arch.name} does not fit at any sequence length (its weights alone need too much)")
            local_note = (f"{arch.name} does not fit {lt.name} ({g.name}, {g.memory_gib:g} GiB) for stage(s) "
                          f"{', '.join(str(c.stage) for c in misfits)}: largest preset that fits at seq {st.seq_len} "
                          f"with QLoRA: {what}; {seq}")
    return Plan(list(cells.values()), recommended, strategies, local_note, warnings)
