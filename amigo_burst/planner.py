"""Config + targets + prices + past runs -> planning inputs, and the one budget rule.

    make_plan(cfg, runs)                     the stage x target matrix of `plan` and `report`
    estimate_for_launch(cfg, stage, target)  the plan cell a launch records and checks against
    auto_target(cfg, stage)                  `--cloud auto` / `pipeline --plan auto`
    budget_for(cfg, stage, max_usd=...)      which budget applies to a stage (see below)
    budget_left(cfg, stage, runs, ...)       what one attempt may spend: less earlier attempts, within the project
    project_money(cfg, runs)                 spent / committed / left of `[project] max_usd`

Which budget applies, the only place it is written: a budget given on the command line
(`--max-usd`, `plan --budget-usd`, `--deadline-hours`) applies to every stage it names and wins
over the stage's own `max_usd` / `max_hours` in amigo.toml, which apply otherwise. The command
line is the more specific, more recent decision; amigo.toml holds the standing defaults. A resume
gets the stage's budget less what the run's earlier attempts cost; every attempt gets at most what
is left of the project's max_usd. What a budget buys (the cap on the machine, the trainer's share,
the worst case, whether an estimate is within it): planning/budget.py, for plan and launch alike.

Everything here reads files at the edge (amigo.toml's datasets, sky/*.yaml, price catalogs,
run records) and hands plain data to the pure modules in planning/.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, is_dataclass, replace
from pathlib import Path

from amigo_burst.clouds import PRICED
from amigo_burst.config import AmigoConfig, LocalGpuConfig
from amigo_burst.errors import UserError
from amigo_burst.planning import budget as budget_rule
from amigo_burst.planning.calibration import calibrate
from amigo_burst.planning.compare import compare
from amigo_burst.planning.estimate import StageExtras
from amigo_burst.planning.hardware import gpu_for_accelerator, gpu_table, load_arch
from amigo_burst.planning.ledger import Money, run_spent, totals
from amigo_burst.planning.matrix import (
    Cell,
    Option,
    Settings,
    StageInput,
    best_cell,
    fallback_cells,
    plan_cell,
)
from amigo_burst.planning.pricing import PriceTable, load_prices, local_usd_per_hour
from amigo_burst.planning.strategies import Plan, build_plan
from amigo_burst.stages import STAGES
from amigo_burst.state import paths
from amigo_burst.state.ledger import Ledger
from amigo_burst.state.records import open_records
from amigo_burst.targets import REPO_ROOT, Target, all_targets

# Data-parallel sizes the plan considers (of those the catalog offers): the global batch of 16
# sequences divides evenly, and torchrun's ranks pair up for the all-reduce.
GPU_COUNTS = (1, 2, 4, 8)


@dataclass(frozen=True)
class Budget:
    usd: float | None = None
    hours: float | None = None
    source: str = "none"  # "command line" | "amigo.toml" | "none"
    note: str = ""  # how it was reduced: earlier attempts of a resumed run, what is left of the project's


def budget_for(cfg: AmigoConfig, stage: int, *, max_usd: float | None = None,
               max_hours: float | None = None) -> Budget:
    """The command line's value wins over the stage's own (module docstring)."""
    sc = cfg.stage(stage)
    usd = max_usd if max_usd is not None else sc.max_usd
    hours = max_hours if max_hours is not None else sc.max_hours
    cli = (max_usd is not None) or (max_hours is not None)
    return Budget(usd, hours, "command line" if cli else ("amigo.toml" if usd or hours else "none"))


def runtime_limit_s(budget: Budget, usd_per_hour: float | None) -> int:
    """$ budget -> seconds of training at the target's price, capped by the hours budget (0: no limit):
    the trainer's share of planning/budget.py's rule. e.g. $10 at $0.40/h = 25 h = 90,000 s machine
    time; x 0.9 = 81,000 s."""
    return budget_rule.limits(budget.usd, budget.hours, usd_per_hour, cloud=False).train_s


def budget_left(cfg: AmigoConfig, stage: int, runs, *, max_usd: float | None = None,
                resume_id: str | None = None, share_usd: float | None = None, now: float | None = None) -> Budget:
    """What one attempt of STAGE may spend: the stage's budget (budget_for) less what the resumed run's
    earlier attempts cost, then at most what is left of the project's `[project] max_usd` (spent and
    committed by every run: planning/ledger.py). usd <= 0: nothing is left."""
    b = budget_for(cfg, stage, max_usd=max_usd)
    usd, source, notes = b.usd, b.source, []
    now = time.time() if now is None else now
    attempts = Ledger(runs).attempts() if runs is not None else []
    if usd is not None and resume_id:
        spent = run_spent(attempts, resume_id, now)
        if spent > 0:
            usd -= spent
            notes.append(f"${b.usd:,.2f} less ${spent:,.2f} spent by earlier attempts of {resume_id}")
    money = totals(attempts, now, cfg.project.max_usd)
    if money.left is not None and (usd is None or money.left < usd):
        usd, source = money.left, "project"
        notes.append(f"what is left of the project's ${money.max_usd:,.2f}: ${money.spent:,.2f} spent, "
                     f"${money.committed:,.2f} committed")
    if share_usd is not None and (usd is None or share_usd < usd):  # pipeline: the later stages' money kept
        usd, source = share_usd, "project"
        notes.append("what the stages after it leave of the project's money")
    return Budget(usd, b.hours, source, "; ".join(notes))


def project_money(cfg: AmigoConfig, runs, now: float | None = None) -> Money:
    """Spent / committed / left of the whole project (status, report, pipeline)."""
    attempts = Ledger(runs).attempts() if runs is not None else []
    return totals(attempts, time.time() if now is None else now, cfg.project.max_usd)


def local_gpu(cfg: AmigoConfig | None) -> LocalGpuConfig:
    return cfg.local_gpu if cfg is not None else LocalGpuConfig()


def price_table(cfg: AmigoConfig | None = None, home: Path | None = None) -> PriceTable:
    """Per cloud: SkyPilot's catalog file under HOME (default: the user's) when present, else the snapshot."""
    return load_prices(home=home)


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


def usd_per_hour_for(gpu, cfg: AmigoConfig | None, prices: PriceTable, count: int = 1) -> tuple[float | None, str]:
    """$/h for COUNT of a GPU: electricity when it is this machine's (local GPU or cpu), else the
    cheapest catalog machine of that card and count on any cloud."""
    local = local_gpu(cfg)
    if gpu.kind in ("laptop", "cpu") or gpu.name == local.name:
        if gpu.kind == "cpu":
            return gpu.board_power_w / 1000 * local.usd_per_kwh, f"electricity {gpu.board_power_w:g} W"
        return local_usd_per_hour(local), f"electricity {local.board_power_w:g} W x ${local.usd_per_kwh:g}/kWh"
    offers = [o for o in prices.offers if o.count == count and o.usd_per_hour is not None
              and (g := gpu_for_accelerator(o.cloud, o.accelerator, o.gpu_memory_gib)) and g.name == gpu.name]
    if not offers:
        return None, f"no {gpu.name}:{count} in the catalogs"
    best = min(offers, key=lambda o: o.usd_per_hour)
    return best.usd_per_hour, f"{best.cloud} {best.label} ({prices.describe(best.cloud)})"


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


def stage_rows(cfg: AmigoConfig, number: int) -> int | None:
    """Rows (DPO: pairs) a stage trains on before preparation: max_rows, capped by a local JSONL's lines."""
    ds = cfg.stages[number].dataset
    if ds.path and cfg.resolve(ds.path).suffix == ".jsonl" and cfg.resolve(ds.path).is_file():
        with open(cfg.resolve(ds.path), "rb") as f:
            lines = sum(1 for line in f if line.strip())
        return min(lines, ds.max_rows) if ds.max_rows else lines
    return ds.max_rows


def train_defaults(number: int) -> dict:
    """train/configs/stage<N>.yaml: the entrypoint's defaults the controller does not override (save_steps,
    eval_steps), read as data (the controller never imports the entrypoint)."""
    import yaml

    p = REPO_ROOT / "train" / "configs" / f"stage{number}.yaml"
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}


def stage_extras(cfg: AmigoConfig, number: int, *, local: bool, tokens: int | None, rows: int | None,
                 arch=None) -> StageExtras:
    """What stage NUMBER does besides its training steps, on the laptop (local) or a cloud machine
    (planning/parts.py). The inputs: a hub dataset is read (dataset.read_gb, else its tokens x 3.6 bytes)
    and tokenized by whoever prepares it -- the laptop before a local run, the machine itself when
    dataset.prepare sends it there; else the machine fetches the prepared rows (+ the previous adapter,
    fp32). Data prepared here before a cloud launch is not on the machine's clock. Validation and
    checkpoint cadence as stage_envs passes them (amigo.toml, else train/configs); the benchmark: [eval]."""
    from amigo_burst.planning.parts import BYTES_PER_TOKEN

    sc = cfg.stage(number)
    ds, y = sc.dataset, train_defaults(number)
    source = (ds.read_gb * 1e9 if ds.read_gb else (tokens or 0) * BYTES_PER_TOKEN)
    on_target = bool(ds.hub) and (ds.prepare == "target" or (ds.prepare == "auto" and not local))
    adapter = arch.lora_params(cfg.lora.r, tuple(cfg.lora.target_modules)) * 4 if arch and number > 1 else 0
    if local:
        fetch, prepare = (source if ds.hub else 0.0), source
    elif on_target:
        fetch, prepare = source + adapter, source
    else:
        fetch, prepare = (tokens or 0) * BYTES_PER_TOKEN + adapter, 0.0
    eval_steps, save_steps = sc.eval_steps or y.get("eval_steps") or 0, y.get("save_steps") or 0
    if sc.max_steps and sc.max_steps <= 100:  # launch.stage_envs: an eval and a checkpoint half-way
        half = max(1, sc.max_steps // 2)
        save_steps, eval_steps = half, sc.eval_steps or half
    return replace(benchmark_extras(cfg), rows=rows, fetch_bytes=fetch, prepare_bytes=prepare,
                   eval_fraction=sc.eval_fraction, eval_max_rows=sc.eval_max_rows, eval_steps=int(eval_steps),
                   save_steps=int(save_steps), save_minutes=sc.save_minutes)


def benchmark_extras(cfg: AmigoConfig | None) -> StageExtras:
    """The benchmark every stage runs after training ([eval]; all 164 problems without a config)."""
    from amigo_burst.planning.parts import HUMANEVAL_PROBLEMS

    if cfg is None:
        return StageExtras(benchmark_problems=HUMANEVAL_PROBLEMS)
    return StageExtras(benchmark_problems=HUMANEVAL_PROBLEMS if cfg.eval.limit is None else cfg.eval.limit,
                       benchmark_new_tokens=cfg.eval.max_new_tokens)


def stage_inputs(cfg: AmigoConfig, numbers: list[int], tokens: dict[int, int | None] | None = None, *,
                 max_usd: float | None = None, max_hours: float | None = None, arch=None) -> list[StageInput]:
    out = []
    for n in numbers:
        sc = cfg.stage(n)
        t = (tokens or {}).get(n)
        t = t if t is not None else stage_tokens(cfg, n)
        rows = stage_rows(cfg, n)
        epochs = sc.epochs
        if sc.max_steps and isinstance(sc.micro_batch, int) and isinstance(sc.grad_accum, int):
            # max_steps caps the run: steps x micro x accum x seq tokens at most (packed)
            cap = sc.max_steps * sc.micro_batch * sc.grad_accum * sc.max_seq_len
            if t is None or t * epochs > cap:
                t, epochs = cap, 1.0
                rows = sc.max_steps * sc.micro_batch * sc.grad_accum
        b = budget_for(cfg, n, max_usd=max_usd, max_hours=max_hours)
        out.append(StageInput(n, STAGES[n].name, STAGES[n].trainer, sc.max_seq_len, sc.micro_batch, sc.grad_accum,
                              t, epochs, b.usd, b.hours,
                              stage_extras(cfg, n, local=True, tokens=t, rows=rows, arch=arch),
                              stage_extras(cfg, n, local=False, tokens=t, rows=rows, arch=arch)))
    return out


def target_options(cfg: AmigoConfig | None, prices: PriceTable) -> list[Option]:
    """sky/*.yaml -> every Option of every target: the laptop; each cloud target on every machine of
    its cloud's catalog whose GPU gpus.csv knows, at every count the catalog offers; a target
    without a priced cloud (Slurm) on its YAML's accelerator."""
    out = []
    for t in all_targets(cfg.root if cfg is not None else None):
        if t.is_local:
            out.append(Option(t.name, "local", t.accelerator, 1, local_gpu(cfg).name,
                              local_usd_per_hour(local_gpu(cfg)), True, price_note="electricity"))
            continue
        menu = []
        offers = prices.of(t.infra)
        for o in offers:
            gpu = gpu_for_accelerator(t.infra, o.accelerator, o.gpu_memory_gib)
            if gpu is not None and o.usd_per_hour is not None and o.count in GPU_COUNTS:
                twins = {round(x.gpu_memory_gib or 0) for x in offers if (x.accelerator, x.count) == (o.accelerator, o.count)}
                menu.append(Option(t.name, t.infra, o.accelerator, o.count, gpu.name, o.usd_per_hour,
                                   instance_type=o.instance_type, price_note=prices.describe(t.infra),
                                   pin_instance=len(twins) > 1))
        if t.accelerator and not any(m.accelerator == t.accelerator and m.count == t.gpu_count for m in menu):
            gpu = gpu_for_accelerator(t.infra, t.accelerator)
            menu.append(Option(t.name, t.infra, t.accelerator, t.gpu_count, gpu.name if gpu else None, None,
                               price_note="not in the catalog" if t.infra in PRICED else "your own cluster"))
        out += menu or [Option(t.name, t.infra, None, 0, None, None, price_note="CPU only")]
    return out


def _arch(cfg: AmigoConfig):
    ref = cfg.model.arch
    as_path = ref.endswith(".json") or ("/" in ref and cfg.resolve(ref).exists())
    return load_arch(cfg.resolve(ref) if as_path else ref)


def settings_for(cfg: AmigoConfig, packing: bool = False) -> Settings:
    """packing: the estimate for packed rows (a target with flash-attn); the targets pad (train/accel.py)."""
    return Settings(method=cfg.model.method, rank=cfg.lora.r, target_modules=tuple(cfg.lora.target_modules),
                    lora_dropout=cfg.lora.dropout > 0, packing=packing)


def make_plan(cfg: AmigoConfig | None, runs, stages: list[int] | None = None, *, max_usd: float | None = None,
              max_hours: float | None = None, tokens: dict[int, int | None] | None = None,
              prices: PriceTable | None = None, packing: bool = False) -> tuple[Plan, PriceTable, object]:
    if cfg is None:
        raise UserError("plan needs an amigo.toml: pass --config PATH")
    prices = prices or price_table(cfg)
    numbers = [n for n in (stages or sorted(cfg.stages)) if n in cfg.stages]
    if not numbers:
        raise UserError(f"no configured stage among {stages}: amigo.toml has {sorted(cfg.stages)}")
    arch = _arch(cfg)
    plan = build_plan(arch, stage_inputs(cfg, numbers, tokens, max_usd=max_usd, max_hours=max_hours, arch=arch),
                      target_options(cfg, prices), gpus_for(cfg), settings=settings_for(cfg, packing),
                      calibration=calibrate(runs_as_dicts(runs)))
    return plan, prices, arch


def auto_target(cfg: AmigoConfig, stage: int, runs=None, *, max_usd: float | None = None,
                max_hours: float | None = None, tokens: int | None = None) -> tuple[str, str]:
    """`--cloud auto`: (target name, reason). UserError when nothing fits within the limits."""
    plan, _, _ = make_plan(cfg, runs if runs is not None else past_runs(cfg), [stage], max_usd=max_usd,
                           max_hours=max_hours, tokens={stage: tokens} if tokens is not None else None)
    cell, why = plan.recommended[stage]
    if cell is None:
        raise UserError(f"stage {stage}: {why}")
    return cell.target, why


def estimate_for_target(cfg: AmigoConfig, stage: int, target_name: str, tokens: int | None = None,
                        runs=None, gpu: str | None = None, max_usd: float | None = None,
                        gpu_count: int | None = None) -> Cell:
    """The plan cell of one (stage, target): its best option (or the one `gpu` names, "H100" or
    "H100:2"; gpu_count: only machines with that many GPUs, what a resume trained on): fits, method,
    micro-batch x accum, accelerator and count, hours, $, the Estimate."""
    plan, _, _ = make_plan(cfg, runs if runs is not None else past_runs(cfg), [stage], max_usd=max_usd,
                           tokens={stage: tokens} if tokens is not None else None)
    mine = [c for c in plan.cells if c.target == target_name]
    if not mine:
        raise UserError(f"no target named {target_name!r} in sky/")
    if gpu_count:
        same = [c for c in mine if c.gpu_count == gpu_count or c.local or not c.option or c.option.cloud not in PRICED]
        if not same:
            raise UserError(f"--resume: the run trained on {gpu_count} GPUs and {target_name} offers no {gpu_count}-GPU "
                            "machine in the catalog now: a different count changes the global batch under the "
                            "checkpoint; resume on another target with that count, or start over without --resume")
        mine = same
    if gpu:
        name, _, count = gpu.partition("@")[0].partition(":")
        same = [c for c in mine if (c.accelerator or "").lower() == name.lower()
                and (not count or str(c.gpu_count) == count)]
        if not same and not any(c.option and c.option.cloud in PRICED for c in mine):
            same = mine  # your own cluster: no catalog to check the name against
        if not same:
            offered = ", ".join(sorted({c.gpu_label for c in mine}))
            raise UserError(f"--gpu {gpu}: {target_name} offers no such machine in the catalog; it has {offered}")
        mine = same
    sc = cfg.stage(stage)
    b = budget_for(cfg, stage, max_usd=max_usd)
    deadline = b.hours if sc else None
    best, _ = best_cell(mine, b.usd, deadline)
    if best is None:
        return min(mine, key=lambda c: c.peak_vram_gib - c.memory_gib if c.estimate else 1e9)
    # --gpu names one machine: exactly that; the plan's own choice may fall back to equal deals
    return best if gpu else replace(best, fallbacks=fallback_cells(best, mine, b.usd, deadline))


def estimate_for_launch(cfg: AmigoConfig, stage: int, target: Target, tokens: int, gpu: str | None = None,
                        max_usd: float | None = None, cpu_fallback: bool = False,
                        gpu_count: int | None = None) -> Cell | None:
    """The estimate a launch checks and records (calibration later compares it with what happened),
    with the machine the plan chose on that target (`gpu` overrides it).

    None for a target with no GPU in its YAML and no catalog (a CPU-only Slurm partition): there is
    no GPU row to estimate against, and refusing the launch for that would be wrong. A probe
    (cpu_fallback) measures such a target anyway: its estimate is the CPU row's, so the probe
    calibrates "cpu".
    """
    if not target.is_local and not target.accelerator and target.infra not in PRICED:
        return cpu_cell(cfg, stage, target, tokens) if cpu_fallback else None
    return estimate_for_target(cfg, stage, target.name, tokens, gpu=gpu, max_usd=max_usd, gpu_count=gpu_count)


def cpu_cell(cfg: AmigoConfig, stage: int, target: Target, tokens: int | None, runs=None) -> Cell:
    """STAGE on a CPU-only target (no price: your own cluster), on gpus.csv's cpu row."""
    gpus = gpus_for(cfg)
    option = Option(target.name, target.infra, None, 1, "cpu", None, price_note="your own cluster")
    arch = _arch(cfg)
    st = stage_inputs(cfg, [stage], {stage: tokens}, arch=arch)[0]
    return plan_cell(arch, option, gpus["cpu"], st, settings_for(cfg),
                     calibrate(runs_as_dicts(runs if runs is not None else past_runs(cfg))))


def compare_rows(cfg: AmigoConfig, plan: Plan, prices: PriceTable, arch) -> list[dict]:
    """`plan --compare`: the original analysis' figures beside this plan's (planning/compare.py)."""
    laptop = gpus_for(cfg).get(local_gpu(cfg).name)
    seq = cfg.stages[min(cfg.stages)].max_seq_len
    return compare(plan, prices, arch, laptop, seq)
