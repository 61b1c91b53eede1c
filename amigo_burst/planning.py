"""The plan-building glue of `estimate | plan | report` and of `launch` / `--cloud auto`:
amigo.toml stages and sky/ targets -> plan.StageInput / plan.TargetInfo -> plan.build_plan.

Moved out of cli_estimate.py (which re-exports these names); heavy imports stay inside functions.
"""

from __future__ import annotations

from dataclasses import asdict, is_dataclass

from amigo_burst.errors import UserError


def _local_gpu_cfg(cfg):
    if cfg is not None:
        return cfg.local_gpu
    from amigo_burst.config import LocalGpuConfig

    return LocalGpuConfig()


def price_table(cfg):
    from amigo_burst.pricing import load_prices

    return load_prices(cfg.root / ".amigo" / "prices.json" if cfg is not None else None)


def _runs_as_dicts(runs) -> list[dict]:
    return [asdict(r) if is_dataclass(r) else dict(r) for r in (runs or [])]


def stage_tokens(cfg, number: int) -> int | None:
    """Tokens of a stage's dataset before preparation: a local file's bytes / 3.6 (BPE on code and
    English: ~3.5-4 characters per token), scaled to max_rows; a hub dataset: max_rows x tokens_per_row
    (default 400)."""
    sc = cfg.stages[number]
    ds = sc.dataset
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


def stage_inputs(cfg, numbers: list[int], tokens: dict[int, int | None] | None = None):
    from amigo_burst.plan import StageInput
    from amigo_burst.stages import STAGES

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
        out.append(StageInput(n, STAGES[n].name, STAGES[n].trainer, sc.max_seq_len, sc.micro_batch, sc.grad_accum,
                              t, epochs, sc.max_usd, sc.max_hours))
    return out


def target_infos(cfg, prices):
    """sky/*.yaml -> plan.TargetInfo with a GPU row and a $/h."""
    from amigo_burst.estimate import gpu_for_accelerator
    from amigo_burst.plan import TargetInfo
    from amigo_burst.pricing import local_usd_per_hour
    from amigo_burst.targets import all_targets

    out = []
    for t in all_targets(cfg.root if cfg is not None else None):
        if t.is_local:
            out.append(TargetInfo(t.name, t.accelerator, _local_gpu_cfg(cfg).name,
                                  local_usd_per_hour(_local_gpu_cfg(cfg)), True, "electricity"))
            continue
        gpu = gpu_for_accelerator(t.infra, t.accelerator)
        p = prices.get(t.infra, t.accelerator) if t.accelerator else None
        rate = p.usd_per_hour * max(t.gpu_count, 1) if p and p.usd_per_hour is not None else None
        out.append(TargetInfo(t.name, t.accelerator, gpu.name if gpu else None, rate, False,
                              prices.describe() if p else "no catalog price"))
    return out


def _gpus_for(cfg) -> dict:
    from dataclasses import replace

    from amigo_burst.estimate import gpu_table

    gpus = dict(gpu_table())
    local = _local_gpu_cfg(cfg)
    if local.name in gpus:
        gpus[local.name] = replace(gpus[local.name], memory_gib=local.vram_gib)
    return gpus


def make_plan(cfg, runs, stages: list[int] | None = None, budget_usd: float | None = None,
              deadline_hours: float | None = None, tokens: dict[int, int | None] | None = None, prices=None):
    from amigo_burst.calibration import calibrate
    from amigo_burst.estimate import load_arch
    from amigo_burst.plan import build_plan

    if cfg is None:
        raise UserError("plan needs an amigo.toml: pass --config PATH")
    prices = prices or price_table(cfg)
    numbers = [n for n in (stages or sorted(cfg.stages)) if n in cfg.stages]
    if not numbers:
        raise UserError(f"no configured stage among {stages}: amigo.toml has {sorted(cfg.stages)}")
    arch_ref = cfg.model.arch
    arch = load_arch(cfg.resolve(arch_ref) if arch_ref.endswith(".json") or "/" in arch_ref and
                     cfg.resolve(arch_ref).exists() else arch_ref)
    infos = target_infos(cfg, prices)
    local = next((t.name for t in infos if t.local and t.name.split("-")[0] == cfg.targets.local), None) or next(
        (t.name for t in infos if t.local), None)
    cloud = next((t.name for t in infos if t.name == cfg.targets.cloud), None) or next(
        (t.name for t in infos if t.name.split("-")[0] == cfg.targets.cloud), None)
    plan = build_plan(arch, stage_inputs(cfg, numbers, tokens), infos, _gpus_for(cfg), method=cfg.model.method,
                      rank=cfg.lora.r, target_modules=tuple(cfg.lora.target_modules),
                      calibration=calibrate(_runs_as_dicts(runs)), budget_usd=budget_usd,
                      deadline_hours=deadline_hours, local_target=local, cloud_target=cloud,
                      lora_dropout=cfg.lora.dropout > 0)
    return plan, prices, arch


def auto_target(cfg, stage: int, runs=None, *, budget_usd: float | None = None, deadline_hours: float | None = None,
                tokens: int | None = None) -> tuple[str, str]:
    """`--cloud auto`: (target name, reason). UserError when nothing fits within the limits."""
    from amigo_burst.plan import choose_target

    plan, _, _ = make_plan(cfg, runs, [stage], tokens={stage: tokens} if tokens is not None else None)
    sc = cfg.stage(stage)
    name, why = choose_target([c for c in plan.cells if c.stage == stage],
                              budget_usd if budget_usd is not None else sc.max_usd,
                              deadline_hours if deadline_hours is not None else sc.max_hours)
    if name is None:
        raise UserError(f"stage {stage}: {why}")
    return name, why


def estimate_for_target(cfg, stage: int, target_name: str, tokens: int | None = None, runs=None) -> dict:
    """For `launch`: the plan cell of one (stage, target) as a dict: Estimate.to_dict() keys plus
    method (lora|qlora, chosen when [model].method is auto), micro_batch, grad_accum, usd_per_hour, reason."""
    plan, _, _ = make_plan(cfg, runs, [stage], tokens={stage: tokens} if tokens is not None else None)
    cell = next((c for c in plan.cells if c.target == target_name), None)
    if cell is None:
        raise UserError(f"no target named {target_name!r} in sky/")
    d = cell.estimate.to_dict() if cell.estimate else {"fits": False, "usd": None, "hours": None, "usd_per_hour": None}
    d.update(method=cell.method, micro_batch=cell.micro_batch, grad_accum=cell.grad_accum, reason=cell.reason,
             target=target_name)
    return d


def runs_for(cfg) -> list[dict]:
    if cfg is None or not (cfg.root / ".amigo" / "state.db").exists():
        return []
    from amigo_burst.launch import run_store

    return _runs_as_dicts(run_store(cfg).list())
