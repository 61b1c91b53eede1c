"""Everything a launch checks before it writes or starts anything, cheapest first.

    check_target_options   options that make no sense on the target (--gpu on the laptop)
    preflight              SkyPilot's own credential check for the target's cloud (no API server)
    previous_run           the lineage: --from names a successful run of the stage before
    check_fit_first        the pure memory-fit check, before any dataset or tokenizer is touched
    check_estimate         the estimate with the real token count against the budget (planning/budget.py)
    hub_offline_if_unreachable   no network: the hub libraries read their caches instead of retrying

Each refusal is a UserError: one line, exit 2, no run recorded.
"""

from __future__ import annotations

import os

from amigo_burst import planner
from amigo_burst.clouds import CLOUDS
from amigo_burst.config import AmigoConfig
from amigo_burst.errors import UserError
from amigo_burst.planning.budget import AUTODOWN_IDLE_MIN, KILL_GRACE_S, Limits, limits
from amigo_burst.planning.matrix import Cell
from amigo_burst.planning.units import hours_text, usd_text
from amigo_burst.runners.sky import cloud_access
from amigo_burst.state.records import Run, RunStore
from amigo_burst.targets import Target


def check_target_options(target: Target, gpu: str | None, spot: bool) -> None:
    """Options that make no sense on this target are refused, not ignored."""
    if target.is_local and gpu:
        raise UserError(f"--gpu {gpu}: {target.name} trains on this machine's own GPU ([local_gpu] in "
                        "amigo.toml); --gpu picks a cloud machine's accelerator")
    if spot and target.is_local:
        raise UserError("--spot is for cloud targets")


def preflight(target: Target) -> None:
    """SkyPilot's own credential check for the target's cloud, before anything is recorded or started:
    a launch SkyPilot would refuse after provisioning steps costs a FAILED record and a minute."""
    if target.is_local:
        return
    ok, why = cloud_access(target.infra)
    if not ok:
        fix = CLOUDS[target.infra].fix if target.infra in CLOUDS else "see `sky check`"
        raise UserError(f"SkyPilot cannot use {target.infra} ({why.rstrip('.')}): {fix}  (`amigo-burst doctor` "
                        "checks every cloud)")


def previous_run(stage: int, from_run: str | None, from_base: bool, runs: RunStore,
                 parent: int | None | str = "default") -> Run | None:
    """The run whose adapter this stage continues: --from RUN (a successful run of the PARENT stage),
    else the newest successful run of it; None for the first stage and --from-base. PARENT: the stage
    before it in amigo.toml (`AmigoConfig.previous_stage`: without [stages.3], stage 4's parent is 2);
    None: the stage starts from the base model."""
    parent = stage - 1 if parent == "default" else parent
    if parent == 0:
        parent = None
    if from_base:
        return None
    if from_run:
        prev = runs.get(from_run)
        if parent is None:
            raise UserError(f"--from {prev.id}: stage {stage} starts from the base model (no stage before it in "
                            "amigo.toml); --from names the run of the stage before")
        if prev.stage != parent:
            raise UserError(f"--from {prev.id}: that is a stage {prev.stage} run; stage {stage} continues from a "
                            f"stage {parent} run (`amigo-burst status` lists them)")
        if prev.status != "SUCCEEDED":
            raise UserError(f"--from {prev.id}: that run is {prev.status}, not SUCCEEDED")
        if prev.is_probe:
            raise UserError(f"--from {prev.id}: that is a probe (a few measuring steps), not the stage's run")
        return prev
    if parent is None:
        return None
    prev = runs.latest(parent)
    if prev is None:
        raise UserError(
            f"stage {stage} starts from the stage {parent} adapter, and no stage {parent} run succeeded: "
            f"run stage {parent} first, or pass --from RUN or --from-base"
        )
    return prev


def check_fit_first(cfg: AmigoConfig, stage: int, target: Target, force: bool, gpu: str | None = None) -> None:
    """The pure memory-fit check, before any dataset or tokenizer is touched: a 12B base on a 6 GB
    laptop is refused at once, not after minutes of downloading (tokens do not change the fit)."""
    if force:
        return
    est = planner.estimate_for_launch(cfg, stage, target, None, gpu=gpu)  # --gpu: that machine's memory
    if est is not None and not est.fits:
        check_estimate(stage, target, est, planner.Budget(), force)


def hub_offline_if_unreachable(cfg: AmigoConfig, stage: int, timeout_s: float = 3.0) -> bool:
    """No network: HF_HUB_OFFLINE / HF_DATASETS_OFFLINE, so transformers and datasets read their caches
    and fail at once instead of retrying the hub for a minute. Only when the hub is needed (a hub id as
    base model or a hub dataset) and nobody set the variables. Returns True when it switched offline."""
    needs_hub = not cfg.resolve(cfg.model.base).exists() or bool(cfg.stage(stage).dataset.hub)
    if not needs_hub or "HF_HUB_OFFLINE" in os.environ:
        return False
    from amigo_burst.lifecycle.basemodel import hub_reachable

    if hub_reachable(timeout_s):  # the hub of HF_ENDPOINT (a mirror, a proxy) when set
        return False
    os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    return True


def check_estimate(stage: int, target: Target, est: Cell | None, budget: planner.Budget, force: bool,
                   lim: Limits | None = None) -> None:
    """Refuse (UserError) a launch its estimate says is over budget or does not fit, unless --force.

    One rule with the cap the job carries (planning/budget.py): the estimate must fit what the dollar
    budget buys on this machine after the kill grace and the autodown wait, with a 10% margin; a budget
    already spent (earlier attempts, the project's max_usd) refuses any launch. An hours budget is a
    deadline the job is stopped at, never a refusal. LIM: the launch's limits (their $/h: the dearest
    machine it may rent)."""
    if force:
        return
    fix = "raise [project] max_usd" if budget.source == "project" else "raise --max-usd"
    why = f" ({budget.note})" if budget.note else ""
    if budget.usd is not None and budget.usd <= 0:
        raise UserError(f"stage {stage}: nothing is left of its budget{why}: {fix} or pass --force")
    if est is None:
        return
    rate = (lim.usd_per_hour if lim is not None else None) or getattr(est, "max_usd_per_hour", None) \
        or getattr(est, "usd_per_hour", None)
    if budget.usd is not None and est.usd and not rate and est.usd > budget.usd:
        # no rate to cap by: the estimate's dollars as the plan shows them ("$0.0042", not "$0.00")
        raise UserError(f"estimated {usd_text(est.usd)} exceeds the {usd_text(budget.usd)} budget{why} by "
                        f"{usd_text(est.usd - budget.usd)}: {fix} or pass --force")
    dollars = limits(budget.usd, None, rate, cloud=not target.is_local)
    if est.fits and budget.usd is not None and rate and not dollars.allows(est.hours):
        after_cap = "" if target.is_local else (f" less {KILL_GRACE_S // 60} min to save and {AUTODOWN_IDLE_MIN} "
                                                "min idle before autodown")
        raise UserError(f"estimated {usd_text(est.usd)} ({hours_text(est.hours)} at ${rate:.2f}/h) exceeds the "
                        f"{usd_text(budget.usd)} budget{why}: within it the job may take "
                        f"{hours_text(dollars.allow_s / 3600)} (90% of what it buys{after_cap}): {fix} or pass --force")
    if not est.fits:
        raise UserError(f"stage {stage} does not fit {target.name} ({est.reason or 'not enough GPU memory'}): "
                        "pick another --cloud, or --force")
