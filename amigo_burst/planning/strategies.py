"""The plan: cells of every stage x option, the recommended option per stage, and strategies that add up.

    all local   every stage on the laptop
    all cloud   every stage on the best cloud option for it (not one fixed cloud)
    hybrid      stage 1 on the laptop, the rest on the best cloud option
    cheapest    per stage, the cheapest option that fits within its budget and deadline
    fastest     per stage, the fastest such option

Each strategy totals hours and dollars over its stages. Where the laptop cannot take a stage for
this base, the strategy says what would and totals that instead: all local runs the largest
preset that fits the laptop (capping the sequence where even that does not fit); hybrid
rehearses stage 1 locally (a few steps on the tiny model: the data, the template and the
entrypoint are checked for cents) and trains it on the best cloud option. `local_options` lists
all three ways out for stage 1 with their numbers. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from amigo_burst.planning.estimate import Workload, estimate, largest_fit, max_seq_len
from amigo_burst.planning.hardware import GpuSpec, ModelArch, load_arch
from amigo_burst.planning.matrix import (
    Cell,
    Option,
    Settings,
    StageInput,
    best_cell,
    build_cells,
    choose_target,
    plan_cell,
    time_key,
)
from amigo_burst.planning.units import hours_text, usd_text

# `rehearse`: stage 1's pipeline end to end on the tiny model, REHEARSE_STEPS steps of
# REHEARSE_SEQ tokens on the laptop, plus its start-up (SetupCost.local).
REHEARSE_STEPS, REHEARSE_SEQ = 20, 512


@dataclass(frozen=True)
class Pick:
    """How one strategy runs one stage."""

    stage: int
    cell: Cell | None
    how: str = ""  # "": as the strategy says; else what it does instead ("llama-3.2-1b", "rehearsed ...")
    in_limits: bool = True
    extra_hours: float = 0.0  # a local rehearsal before the cloud run
    extra_usd: float = 0.0

    @property
    def hours(self) -> float | None:
        return None if self.cell is None or self.cell.hours is None else self.cell.hours + self.extra_hours

    @property
    def usd(self) -> float | None:
        return None if self.cell is None or self.cell.usd is None else self.cell.usd + self.extra_usd


@dataclass(frozen=True)
class Strategy:
    name: str
    picks: dict[int, Pick]
    note: str = ""

    @property
    def placed(self) -> int:
        return sum(1 for p in self.picks.values() if p.cell is not None)

    @property
    def hours(self) -> float | None:
        xs = [p.hours for p in self.picks.values() if p.hours is not None]
        return sum(xs) if xs else None

    @property
    def usd(self) -> float | None:
        xs = [p.usd for p in self.picks.values() if p.usd is not None]
        return sum(xs) if xs else None

    @property
    def feasible(self) -> bool:
        """Every stage placed as the strategy says, within its limits."""
        return all(p.cell is not None and not p.how and p.in_limits for p in self.picks.values())

    @property
    def targets(self) -> dict[int, str]:
        return {s: (p.cell.target if p.cell else "-") for s, p in self.picks.items()}

    def where(self) -> str:
        """'1 local-rtx4050 · 2-5 vast RTX4090:1'-style text: consecutive stages on one option merged."""
        parts: list[tuple[list[int], str]] = []
        for s, p in sorted(self.picks.items()):
            text = "none" if p.cell is None else p.cell.target + (
                "" if p.cell.local else f" {p.cell.gpu_label}") + (f" ({p.how})" if p.how else "")
            if parts and parts[-1][1] == text and parts[-1][0][-1] == s - 1:
                parts[-1][0].append(s)
            else:
                parts.append(([s], text))
        return " · ".join(f"{ss[0]}{'-' + str(ss[-1]) if len(ss) > 1 else ''} {t}" for ss, t in parts)


@dataclass(frozen=True)
class Plan:
    cells: list[Cell]
    recommended: dict[int, tuple[Cell | None, str]]
    strategies: list[Strategy]
    local_options: list[str] = field(default_factory=list)  # what would let the laptop take stage 1
    local_note: str = ""
    warnings: list[str] = field(default_factory=list)


def _stage_cells(cells: list[Cell], stage: int, local: bool | None = None) -> list[Cell]:
    return [c for c in cells if c.stage == stage and (local is None or c.local == local)]


def _pick(cells: list[Cell], st: StageInput, key=None) -> Pick:
    best, ok = best_cell(cells, st.max_usd, st.max_hours, **({"key": key} if key else {}))
    return Pick(st.number, best, "", ok)


def rehearsal(laptop: Option, gpu: GpuSpec, settings: Settings, trainer: str) -> Cell:
    """The local rehearsal of a stage: the tiny model, REHEARSE_STEPS x REHEARSE_SEQ tokens."""
    st = StageInput(0, "rehearse", trainer, REHEARSE_SEQ, 1, 1, tokens=REHEARSE_STEPS * REHEARSE_SEQ)
    return plan_cell(load_arch("tiny"), laptop, gpu, st, replace(settings, method="lora"))


def _laptop_base(arch: ModelArch, laptop: Option, gpu: GpuSpec, stages: list[StageInput],
                 settings: Settings, calibration) -> tuple[ModelArch | None, dict[int, Pick]]:
    """All local with a base that fits: the largest preset that fits the laptop at stage 1's
    sequence (QLoRA), and per stage its cell, the sequence capped where even it does not fit."""
    st1 = min(stages, key=lambda s: s.seq_len)
    w = Workload("qlora", st1.seq_len, 1, rank=settings.rank, target_modules=settings.target_modules,
                 trainer=st1.trainer)
    lf = largest_fit(arch, gpu, w, calibration)
    if lf.model is None:
        return None, {}
    small = load_arch(lf.model)
    picks = {}
    for st in stages:
        c = plan_cell(small, laptop, gpu, st, settings, calibration)
        how = lf.model
        if not c.fits:
            seq = max_seq_len(small, gpu, replace(w, trainer=st.trainer), calibration)
            if seq:
                c, how = plan_cell(small, laptop, gpu, replace(st, seq_len=seq), settings, calibration), \
                    f"{lf.model}, seq {seq}"
        picks[st.number] = Pick(st.number, c if c.fits else None, how, c.fits and not _over(c, st))
    return small, picks


def _over(c: Cell, st: StageInput) -> bool:
    return (st.max_usd is not None and c.usd is not None and c.usd > st.max_usd) or (
        st.max_hours is not None and c.hours is not None and c.hours > st.max_hours)


def _stage1_ways_out(arch: ModelArch, laptop: Option, gpu: GpuSpec, st1: StageInput, cloud_pick: Pick,
                     settings: Settings, calibration, small_pick: Pick | None) -> list[str]:
    """What would let stage 1 run with the laptop's help, each with its numbers."""
    out = []
    if small_pick is not None and small_pick.cell is not None:
        out.append(f"a smaller base: {small_pick.how} on the laptop, {hours_text(small_pick.hours)}, "
                   f"{usd_text(small_pick.usd)}")
    else:
        out.append("a smaller base: no preset fits the laptop at this sequence length")
    w = Workload("qlora", st1.seq_len, 1, rank=settings.rank, target_modules=settings.target_modules,
                 trainer=st1.trainer)
    seq = max_seq_len(arch, gpu, w, calibration)
    if seq:
        c = plan_cell(arch, laptop, gpu, replace(st1, seq_len=seq), settings, calibration)
        out.append(f"a shorter sequence: {arch.name} up to seq {seq} (rows truncated), {hours_text(c.hours)}, "
                   f"{usd_text(c.usd)}")
    else:
        weights = estimate(arch, gpu, w).breakdown_gib["weights"]
        out.append(f"a shorter sequence: none: {arch.name}'s NF4 weights alone are {weights:.1f} GiB "
                   f"of {gpu.memory_gib:g}")
    if cloud_pick.cell is not None:
        r = rehearsal(laptop, gpu, settings, st1.trainer)
        out.append(f"rehearse stage 1 on the laptop ({hours_text(r.hours)}, {usd_text(r.usd)}), train it on "
                   f"{cloud_pick.cell.target} {cloud_pick.cell.gpu_label}: {hours_text(cloud_pick.hours + r.hours)}, "
                   f"{usd_text(cloud_pick.usd + r.usd)}")
    return out


def build_plan(arch: ModelArch, stages: list[StageInput], options: list[Option], gpus: dict[str, GpuSpec], *,
               settings: Settings = Settings(), calibration: dict | None = None) -> Plan:
    """Cells, the recommended option per stage, the five strategies and stage 1's ways out.
    Each StageInput carries its own budget and deadline (the planner's one budget rule)."""
    cells = build_cells(arch, stages, options, gpus, settings, calibration)
    recommended = {st.number: choose_target(_stage_cells(cells, st.number), st.max_usd, st.max_hours)
                   for st in stages}
    cloud = {st.number: _pick(_stage_cells(cells, st.number, local=False), st) for st in stages}
    laptop = next((o for o in options if o.local), None)
    gpu = gpus.get(laptop.gpu_name or "") if laptop else None
    strategies, ways_out, note = [], [], ""
    if laptop is not None and gpu is not None:
        local = {st.number: _pick(_stage_cells(cells, st.number, local=True), st) for st in stages}
        misfit = [s for s, p in local.items() if p.cell is None]
        small, small_picks = _laptop_base(arch, laptop, gpu, stages, settings, calibration) if misfit else (None, {})
        all_local = {s: (p if p.cell is not None or s not in small_picks else small_picks[s]) for s, p in local.items()}
        st1 = next((st for st in stages if st.number == 1), None)  # hybrid's laptop stage, when planned
        note_local = (f"{arch.name} does not fit {laptop.target} ({gpu.name}, {gpu.memory_gib:g} GiB) for stage"
                      f"{'s' if len(misfit) > 1 else ''} {', '.join(map(str, misfit))}") if misfit else ""
        strategies.append(Strategy("all local", all_local, note_local + (f": totals with {small.name}" if small else "")
                                   if misfit else ""))
        strategies.append(Strategy("all cloud", cloud))
        hybrid, hybrid_note = dict(cloud), ""
        if st1 is not None and local[1].cell is not None:
            hybrid[1] = local[1]
        elif st1 is not None and cloud[1].cell is not None:
            r = rehearsal(laptop, gpu, settings, st1.trainer)
            hybrid[1] = Pick(1, cloud[1].cell, "rehearsed on the laptop", cloud[1].in_limits, r.hours or 0, r.usd or 0)
            hybrid_note = "stage 1 rehearsed on the laptop, trained in the cloud"
        strategies.append(Strategy("hybrid", hybrid, hybrid_note))
        if st1 is not None and 1 in misfit:
            ways_out = _stage1_ways_out(arch, laptop, gpu, st1, cloud[1], settings, calibration, small_picks.get(1))
        note = note_local
    else:
        strategies.append(Strategy("all cloud", cloud))
    strategies.append(Strategy("cheapest", {st.number: _pick(_stage_cells(cells, st.number), st) for st in stages}))
    strategies.append(Strategy("fastest", {st.number: _pick(_stage_cells(cells, st.number), st, time_key)
                                           for st in stages}))
    return Plan(cells, recommended, strategies, ways_out, note, _warnings(strategies))


def _warnings(strategies: list[Strategy]) -> list[str]:
    out = []
    for s in strategies:
        late = [f"stage {n}" for n, p in s.picks.items() if p.cell is not None and not p.in_limits]
        if late:
            out.append(f"{s.name}: {', '.join(late)} over the stage's budget or deadline (the cheapest that fits "
                       f"is shown)")
        missing = [f"stage {n}" for n, p in s.picks.items() if p.cell is None]
        if missing:
            out.append(f"{s.name}: {', '.join(missing)} fit{'s' if len(missing) == 1 else ''} no option")
    return out
