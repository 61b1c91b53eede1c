"""Config + targets + prices + past runs -> planning inputs, and the one budget rule.

    make_plan(cfg, runs)                     the stage x target matrix of `plan` and `report`
    estimate_for_launch(cfg, stage, target)  the plan cell a launch records and checks against
    auto_target(cfg, stage)                  `--cloud auto` / `pipeline --plan auto`
    budget_for(cfg, stage, max_usd=...)      which budget applies to a stage (see below)

The budget rule, the only place it is written: a budget given on the command line
(`--max-usd`, `plan --budget-usd`, `--deadline-hours`) applies to every stage it names and wins
over the stage's own `max_usd` / `max_hours` in amigo.toml, which apply otherwise. The command
line is the more specific, more recent decision; amigo.toml holds the standing defaults.

Everything here reads files at the edge (amigo.toml's datasets, sky/*.yaml, price catalogs,
run records) and hands plain data to the pure modules in planning/.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, is_dataclass, replace

from amigo_burst.config import AmigoConfig, LocalGpuConfig
from amigo_burst.errors import UserError
from amigo_burst.planning.calibration import calibrate
from amigo_burst.planning.hardware import gpu_for_accelerator, gpu_table, load_arch
from amigo_burst.planning.matrix import Cell, Plan, StageInput, TargetInfo, build_plan, choose_target
from amigo_burst.planning.pricing import PriceTable, load_prices, local_usd_per_hour
from amigo_burst.stages import STAGES
from amigo_burst.state import paths
from amigo_burst.state.records import open_records
from amigo_burst.targets import Target, all_targets

# The entrypoint gets 90% of the budget's machine-hours: setup and the model download run inside
# the same billed hours, and it stops at the next step boundary after the limit (then saves).
BUDGET_SHARE_FOR_TRAINING = 0.9
MIN_RUNTIME_S = 60


@dataclass(frozen=True)
class Budget:
    usd: float | None = None
    hours: float | None = None
    source: str = "none"  # "command line" | "amigo.toml" | "none"


def budget_for(cfg: AmigoConfig, stage: int, *, max_usd: float | None = None,
               max_hours: float | None = None) -> Budget:
    """The command line's value wins over the stage's own (module docstring)."""
    sc = cfg.stage(stage)
    usd = max_usd if max_usd is not None else sc.max_usd
    hours = max_hours if max_hours is not None else sc.max_hours
    cli = (max_usd is not None) or (max_hours is not None)
    return Budget(usd, hours, "command line" if cli else ("amigo.toml" if usd or hours else "none"))


def runtime_limit_s(budget: Budget, usd_per_hour: float | None) -> int:
    """$ budget -> seconds of training at the target's price, capped by the hours budget (0: no limit).

    e.g. $10 at $0.40/h = 25 h = 90,000 s machine time; x 0.9 for training = 81,000 s.
    """
    limit = 0
    if budget.usd and usd_per_hour:
        limit = max(MIN_RUNTIME_S, int(budget.usd / usd_per_hour * 3600 * BUDGET_SHARE_FOR_TRAINING))
    if budget.hours:
        limit = min(limit or 10**9, int(budget.hours * 3600))
    return limit


def local_gpu(cfg: AmigoConfig | None) -> LocalGpuConfig:
    return cfg.local_gpu if cfg is not None else LocalGpuConfig()


def price_table(cfg: AmigoConfig | None) -> PriceTable:
    return load_prices(paths.prices_cache(cfg.root) if cfg is not None else None)


def runs_as_dicts(runs) -> list[dict]:
    return [asdict(r) if is_dataclass(r) else dict(r) for r in (runs or [])]


def past_runs(cfg: AmigoConfig | None) -> list[dict]:
    """Every recorded run of the project, as dicts (calibration and report read these)."""
    if cfg is None or not paths.db_path(cfg.root).exists():
        return []
    return runs_as_dicts(open_records(cfg.root).list())


def gpus_for(cfg: AmigoConfig | None) -> dict:
    """gpus.csv, with the configured laptop's real memory."""
    gpus = dict(gpu_table())
    local = local_gpu(cfg)
    if local.name in gpus:
        gpus[local.name] = replace(gpus[local.name], memory_gib=local.vram_gib)
    return gpus


def usd_per_hour_for(gpu, cfg: AmigoConfig | None, prices: PriceTable) -> tuple[float | None, str]:
    """$/h for a GPU: electricity when it is this machine's (local GPU or cpu), else the cheapest cloud."""
    local = local_gpu(cfg)
    if gpu.kind in ("laptop", "cpu") or gpu.name == local.name:
        if gpu.kind == "cpu":
            return gpu.board_power_w / 1000 * local.usd_per_kwh, f"electricity {gpu.board_power_w:g} W"
        return local_usd_per_hour(local), f"electricity {local.board_power_w:g} W x ${local.usd_per_kwh:g}/kWh"
    offers = [p for n in (gpu.name, *gpu.aliases) if (p := prices.cheapest(n)) is not None]
    if not offers:
        return None, "no price in the catalogs"
    best = min(offers, key=lambda p: p.usd_per_hour)
    return best.usd_per_hour, f"{best.cloud} {best.accelerator}, {prices.describe()}"


def stage_tokens(cfg: AmigoConfig, number: int) -> int | None:
    """Tokens of a stage's dataset before preparation: a local file's bytes / 3.6 (BPE on code and
    English: ~3.5-4 characters per token), scaled to max_rows; a hub dataset: max_rows x tokens_per_row
    (default 400)."""
    ds = cfg.stages[number].dataset
    if ds.path:
        p = cfg.resolve(ds.path)
        if p.is_file():
            size = p.stat().st_size
            if ds.max_rows and p.suffix == ".jsonl":
                with open(p, "rb") as f:
                    rows = sum(1 for line in f if line.strip())
                size = size * min(1.0, ds.max_rows / max(rows, 1))
            return int(size / 3.6)
    if ds.max_rows:
        return ds.max_rows * (ds.tokens_per_row or 400)
    return None


def stage_inputs(cfg: AmigoConfig, numbers: list[int], tokens: dict[int, int | None] | None = None, *,
                 max_usd: float | None = None, max_hours: float | None = None) -> list[StageInput]:
    out = []
    for n in numbers:
        sc = cfg.stage(n)
        t = (tokens or {}).get(n)
        t = t if t is not None else stage_tokens(cfg, n)
        epochs = sc.epochs
        if sc.max_steps and isinstance(sc.micro_batch, int) and isinstance(sc.grad_accum, int):
            # max_steps caps the run: steps x micro x accum x seq tokens at most (packed)
            cap = sc.max_steps * sc.micro_batch * sc.grad_accum * sc.max_seq_len
            if t is None or t * epochs > cap:
                t, epochs = cap, 1.0
        b = budget_for(cfg, n, max_usd=max_usd, max_hours=max_hours)
        out.append(StageInput(n, STAGES[n].name, STAGES[n].trainer, sc.max_seq_len, sc.micro_batch, sc.grad_accum,
                              t, epochs, b.usd, b.hours))
    return out


def target_infos(cfg: AmigoConfig | None, prices: PriceTable) -> list[TargetInfo]:
    """sky/*.yaml -> TargetInfo with a GPU row and a $/h."""
    out = []
    for t in all_targets(cfg.root if cfg is not None else None):
        if t.is_local:
            out.append(TargetInfo(t.name, t.accelerator, local_gpu(cfg).name,
                                  local_usd_per_hour(local_gpu(cfg)), True, "electricity"))
            continue
        gpu = gpu_for_accelerator(t.infra, t.accelerator)
        p = prices.get(t.infra, t.accelerator) if t.accelerator else None
        rate = p.usd_per_hour * max(t.gpu_count, 1) if p and p.usd_per_hour is not None else None
        out.append(TargetInfo(t.name, t.accelerator, gpu.name if gpu else None, rate, False,
                              prices.describe() if p else "no catalog price"))
    return out


def _arch(cfg: AmigoConfig):
    ref = cfg.model.arch
    as_path = ref.endswith(".json") or ("/" in ref and cfg.resolve(ref).exists())
    return load_arch(cfg.resolve(ref) if as_path else ref)


def make_plan(cfg: AmigoConfig | None, runs, stages: list[int] | None = None, *, max_usd: float | None = None,
              max_hours: float | None = None, tokens: dict[int, int | None] | None = None,
              prices: PriceTable | None = None) -> tuple[Plan, PriceTable, object]:
    if cfg is None:
        raise UserError("plan needs an amigo.toml: pass --config PATH")
    prices = prices or price_table(cfg)
    numbers = [n for n in (stages or sorted(cfg.stages)) if n in cfg.stages]
    if not numbers:
        raise UserError(f"no configured stage among {stages}: amigo.toml has {sorted(cfg.stages)}")
    arch = _arch(cfg)
    infos = target_infos(cfg, prices)
    local = next((t.name for t in infos if t.local and t.name.split("-")[0] == cfg.targets.local), None) or next(
        (t.name for t in infos if t.local), None)
    cloud = next((t.name for t in infos if t.name == cfg.targets.cloud), None) or next(
        (t.name for t in infos if t.name.split("-")[0] == cfg.targets.cloud), None)
    plan = build_plan(arch, stage_inputs(cfg, numbers, tokens, max_usd=max_usd, max_hours=max_hours), infos,
                      gpus_for(cfg), method=cfg.model.method, rank=cfg.lora.r,
                      target_modules=tuple(cfg.lora.target_modules), calibration=calibrate(runs_as_dicts(runs)),
                      budget_usd=max_usd, deadline_hours=max_hours, local_target=local, cloud_target=cloud,
                      lora_dropout=cfg.lora.dropout > 0)
    return plan, prices, arch


def auto_target(cfg: AmigoConfig, stage: int, runs=None, *, max_usd: float | None = None,
                max_hours: float | None = None, tokens: int | None = None) -> tuple[str, str]:
    """`--cloud auto`: (target name, reason). UserError when nothing fits within the limits."""
    plan, _, _ = make_plan(cfg, runs if runs is not None else past_runs(cfg), [stage],
                           tokens={stage: tokens} if tokens is not None else None)
    b = budget_for(cfg, stage, max_usd=max_usd, max_hours=max_hours)
    name, why = choose_target([c for c in plan.cells if c.stage == stage], b.usd, b.hours)
    if name is None:
        raise UserError(f"stage {stage}: {why}")
    return name, why


def estimate_for_target(cfg: AmigoConfig, stage: int, target_name: str, tokens: int | None = None,
                        runs=None) -> Cell:
    """The plan cell of one (stage, target): fits, method, micro-batch x accum, hours, $, the Estimate."""
    plan, _, _ = make_plan(cfg, runs if runs is not None else past_runs(cfg), [stage],
                           tokens={stage: tokens} if tokens is not None else None)
    cell = next((c for c in plan.cells if c.target == target_name), None)
    if cell is None:
        raise UserError(f"no target named {target_name!r} in sky/")
    return cell


def estimate_for_launch(cfg: AmigoConfig, stage: int, target: Target, tokens: int) -> Cell | None:
    """The estimate a launch checks and records (calibration later compares it with what happened).

    None for a target with no GPU in its YAML (a CPU-only Slurm partition): there is no GPU row to
    estimate against, and refusing the launch for that would be wrong.
    """
    if not target.is_local and not target.accelerator:
        return None
    return estimate_for_target(cfg, stage, target.name, tokens)

