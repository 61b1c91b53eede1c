"""Stage x option: what fits where, how long, what it costs, and the best option per stage and target.

Pure: options (each target's GPU menu), stages, GPU specs and prices come in as data. Each
StageInput carries its budget (max_usd, max_hours) already resolved by the planner
(amigo_burst/planner.py: the one budget rule).

An Option is one way to run a stage: the laptop, or a cloud target on one of its cloud's
machines -- any accelerator of that cloud's catalog that gpus.csv knows, at any GPU count the
catalog offers (1, 2, 4, 8, ...). The best Cell of a stage is the cheapest that fits within the
stage's budget and deadline (ties: the faster); strategies.py adds them up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from amigo_burst.planning.budget import affordable_usd
from amigo_burst.planning.estimate import (
    Estimate,
    SetupCost,
    StageExtras,
    Workload,
    estimate,
    max_micro_batch,
)
from amigo_burst.planning.hardware import ALL_LINEAR, GpuSpec, ModelArch
from amigo_burst.planning.units import hours_text, usd_text

GLOBAL_BATCH = 16  # sequences per optimizer step when grad_accum is "auto": micro x accum x GPUs >= 16


@dataclass(frozen=True)
class Option:
    """A target on one machine shape: (target, accelerator, count) with the machine's $/h."""

    target: str  # sky/<target>.yaml stem: "vast", "local-rtx4050", "lambda-a100"
    cloud: str  # "vast", "runpod", "lambda", "slurm", "local"
    accelerator: str | None  # the cloud's SkyPilot name; None: CPU only
    count: int
    gpu_name: str | None  # gpus.csv row; None: not estimable
    usd_per_hour: float | None  # the whole machine
    local: bool = False
    instance_type: str = ""  # the catalog's cheapest machine of this shape
    price_note: str = ""
    pin_instance: bool = False  # the accelerator name alone is ambiguous on this cloud (Vast "A100": 40 or 80 GB)

    @property
    def label(self) -> str:
        return f"{self.accelerator}:{self.count}" if self.accelerator else "CPU"


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
    # what the stage does besides training steps, on the laptop and on a cloud machine (planner.stage_extras)
    extras_local: StageExtras = StageExtras()
    extras_cloud: StageExtras = StageExtras()


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
    option: Option | None = None
    # other machines on the same target SkyPilot may rent, in order, when the planned one is not
    # available (fallback_cells): the launch hands SkyPilot `resources.ordered`, the plan's first
    fallbacks: tuple[Cell, ...] = ()

    @property
    def usd_per_hour(self) -> float | None:
        return self.estimate.usd_per_hour if self.estimate else None

    @property
    def accelerator(self) -> str | None:
        return self.option.accelerator if self.option else None

    @property
    def gpu_count(self) -> int:
        return self.option.count if self.option else 0

    @property
    def gpu_label(self) -> str:
        """"H100-SXM:4" on a cloud; the laptop's own GPU row ("RTX4050-Laptop") locally."""
        if self.local and self.estimate is not None:
            return self.estimate.gpu
        return self.option.label if self.option else "-"

    @property
    def launch_gpu(self) -> str | None:
        """What `launch` hands SkyPilot for this cell: "H100:2", or "A100:1@<instance type>" where the
        name alone would let SkyPilot rent the other card; None for the laptop and unpriced machines
        (their YAML's own accelerator stands)."""
        o = self.option
        if o is None or o.local or not o.accelerator or o.usd_per_hour is None:
            return None
        return f"{o.accelerator}:{o.count}" + (f"@{o.instance_type}" if o.pin_instance and o.instance_type else "")

    @property
    def launch_gpus(self) -> list[str]:
        """launch_gpu, then each fallback's: what SkyPilot tries, in this order ([] when launch_gpu is None)."""
        if self.launch_gpu is None:
            return []
        return [self.launch_gpu] + [f.launch_gpu for f in self.fallbacks]  # fallback_cells: each its own

    @property
    def max_usd_per_hour(self) -> float | None:
        """The dearest $/h among the machines SkyPilot may rent: what the budget's runtime cap uses, so a
        fallback can never spend past the budget."""
        rates = [r for c in (self, *self.fallbacks) if (r := c.usd_per_hour) is not None]
        return max(rates) if rates else None

    def to_record(self) -> dict:
        """What a run record keeps of its estimate (calibration and report read these keys):
        Estimate.to_dict() plus the plan's choices for the cell."""
        d = self.estimate.to_dict() if self.estimate else {"fits": False, "usd": None, "hours": None,
                                                            "usd_per_hour": None}
        return d | {"method": self.method, "micro_batch": self.micro_batch, "grad_accum": self.grad_accum,
                    "reason": self.reason, "target": self.target, "accelerator": self.accelerator,
                    "gpu_count": self.gpu_count, "instance_type": self.option.instance_type if self.option else "",
                    "fallbacks": [f.gpu_label for f in self.fallbacks]}


@dataclass(frozen=True)
class Settings:
    """The knobs every cell of one plan shares."""

    method: str = "auto"
    rank: int = 16
    target_modules: tuple[str, ...] = ALL_LINEAR
    lora_dropout: bool = True
    packing: bool = False  # the targets pad: flash-attn is not installed there (train/accel.py); `--packing`
    download_gbit_s: float = 1.0


def plan_cell(arch: ModelArch, option: Option, gpu: GpuSpec | None, stage: StageInput,
              settings: Settings = Settings(), calibration: dict | None = None) -> Cell:
    """One stage on one option: lora if it fits (faster, no quantisation error), else qlora."""
    if gpu is None:
        return Cell(stage.number, option.target, option.local, False, "-", 0, 0, None, None, 0.0, 0.0, None,
                    f"no GPU spec for {option.accelerator or 'a CPU-only target'}", option)
    s = settings
    setup = SetupCost.local() if option.local else SetupCost.cloud(s.download_gbit_s)
    methods = [s.method] if s.method in ("lora", "qlora") else ["lora", "qlora"]
    chosen = None
    for m in methods:
        w = Workload(m, stage.seq_len, 1, packing=s.packing, tokens=stage.tokens, epochs=stage.epochs, rank=s.rank,
                     target_modules=s.target_modules, trainer=stage.trainer, lora_dropout=s.lora_dropout,
                     gpus=max(option.count, 1))
        per_gpu = max(1, math.ceil(GLOBAL_BATCH / max(option.count, 1)))
        mb = stage.micro_batch if isinstance(stage.micro_batch, int) else max_micro_batch(arch, gpu, w, calibration,
                                                                                           limit=per_gpu)
        mb = max(mb, 1)
        accum = stage.grad_accum if isinstance(stage.grad_accum, int) else max(
            1, math.ceil(GLOBAL_BATCH / (mb * max(option.count, 1))))
        extras = replace(stage.extras_local if option.local else stage.extras_cloud, grad_accum=accum)
        e = estimate(arch, gpu, replace(w, micro_batch=mb), calibration,
                     usd_per_hour=option.usd_per_hour, setup=setup, extras=extras)
        chosen = (m, mb, accum, e)
        if e.fits:
            break
    m, mb, accum, e = chosen
    return Cell(stage.number, option.target, option.local, e.fits, m, mb, accum, e.hours, e.usd, e.peak_vram_gib,
                gpu.memory_gib, e, e.reason, option)


def within(cell: Cell, budget_usd: float | None, deadline_hours: float | None) -> str:
    """"" if the cell is acceptable, else why not."""
    if not cell.fits:
        return f"does not fit ({cell.reason})"
    if budget_usd is not None and cell.usd is not None and cell.usd > affordable_usd(budget_usd, cell.usd_per_hour,
                                                                                  not cell.local):
        # planning/budget.py: the job's estimate gets 90% of what the budget buys after the kill grace and autodown
        return f"{usd_text(cell.usd)} over the ${budget_usd:g} budget"
    if deadline_hours is not None and cell.hours is not None and cell.hours > deadline_hours:
        return f"{hours_text(cell.hours)} over the {deadline_hours:g} h deadline"
    return ""


def _rate(c: Cell) -> float:
    return c.usd_per_hour if c.usd_per_hour is not None else math.inf


def cost_key(c: Cell) -> tuple:
    return (c.usd if c.usd is not None else math.inf, _rate(c), c.hours if c.hours is not None else math.inf)


def time_key(c: Cell) -> tuple:
    return (c.hours if c.hours is not None else math.inf, c.usd if c.usd is not None else math.inf)


def best_cell(cells: list[Cell], budget_usd: float | None = None, deadline_hours: float | None = None,
              key=cost_key) -> tuple[Cell | None, bool]:
    """(the best cell within the limits, True) or, when none is, (the best that fits at all, False)."""
    ok = [c for c in cells if not within(c, budget_usd, deadline_hours)]
    if ok:
        return min(ok, key=key), True
    fitting = [c for c in cells if c.fits]
    return (min(fitting, key=key), False) if fitting else (None, False)


FALLBACK_SLACK = 0.25  # a fallback's stage may cost at most 25% more than the plan's choice (and stays in budget)
MAX_FALLBACKS = 3


def fallback_cells(best: Cell, cells: list[Cell], budget_usd: float | None = None,
                   deadline_hours: float | None = None) -> tuple[Cell, ...]:
    """Machines on BEST's target that keep the plan's promises, cheapest first: within budget and
    deadline, the stage's estimated cost at most FALLBACK_SLACK over BEST's, the same method and GPU
    count (the trainer's DDP world and global batch stay the same) and room for BEST's micro-batch
    (the trainer is told that one). Why: a sold-out card on RunPod or Vast is common, and failing the
    launch when an equal deal sits next to it wastes the user's evening; a dearer one is never tried."""
    if best.usd is None or best.option is None or best.local:
        return ()
    ok = [c for c in cells if c is not best and c.target == best.target and c.stage == best.stage
          and c.option is not None and c.launch_gpu and c.launch_gpu != best.launch_gpu
          and c.method == best.method and c.gpu_count == best.gpu_count and c.micro_batch >= best.micro_batch
          and c.usd is not None and c.usd <= best.usd * (1 + FALLBACK_SLACK)
          and not within(c, budget_usd, deadline_hours)
          # the launch caps the job at the budget / the dearest candidate's $/h: it must still let the
          # plan's own machine finish (best.hours at that rate within the budget, planning/budget.py)
          and not (budget_usd and best.hours and c.usd_per_hour
                   and c.usd_per_hour * best.hours > affordable_usd(budget_usd, c.usd_per_hour, True))]
    return tuple(sorted(ok, key=cost_key)[:MAX_FALLBACKS])


def best_per_target(cells: list[Cell], budget_usd: float | None = None,
                    deadline_hours: float | None = None) -> list[Cell]:
    """One cell per target: its best option for the stage (the cheapest within limits, else the
    cheapest that fits, else the one that came closest to fitting)."""
    out = []
    for target in sorted({c.target for c in cells}):
        mine = [c for c in cells if c.target == target]
        best, _ = best_cell(mine, budget_usd, deadline_hours)
        out.append(best or min(mine, key=lambda c: c.peak_vram_gib - c.memory_gib if c.estimate else math.inf))
    return out


def choose_target(cells: list[Cell], budget_usd: float | None = None,
                  deadline_hours: float | None = None) -> tuple[Cell | None, str]:
    """The cheapest cell that fits within budget and deadline (ties: the faster), with the reason.

    Without token counts (hours unknown) the cheapest $/h that fits wins.
    """
    per_target = best_per_target(cells, budget_usd, deadline_hours)
    best, in_limits = best_cell(cells, budget_usd, deadline_hours)
    rejected = [f"{c.target}: {within(c, budget_usd, deadline_hours)}" for c in per_target
                if within(c, budget_usd, deadline_hours)]
    if best is None or not in_limits:
        return None, "no target fits within the limits — " + "; ".join(rejected)
    cost = (f"{usd_text(best.usd)}, {hours_text(best.hours)}" if best.usd is not None and best.hours is not None
            else f"${_rate(best):.3f}/h")
    why = f"cheapest that fits: {best.gpu_label} ({best.method}, micro-batch {best.micro_batch}): {cost}"
    others = [f"{c.target} {c.gpu_label} {usd_text(c.usd)}" for c in sorted(per_target, key=cost_key)
              if c.target != best.target and not within(c, budget_usd, deadline_hours) and c.usd is not None]
    if others:
        why += "; next: " + ", ".join(others[:3])
    if rejected:
        why += "; skipped " + "; ".join(rejected)
    return best, why


def build_cells(arch: ModelArch, stages: list[StageInput], options: list[Option], gpus: dict[str, GpuSpec],
                settings: Settings = Settings(), calibration: dict | None = None) -> list[Cell]:
    return [plan_cell(arch, o, gpus.get(o.gpu_name or ""), st, settings, calibration)
            for st in stages for o in options]
