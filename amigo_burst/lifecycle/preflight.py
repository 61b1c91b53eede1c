"""Everything a launch checks before it writes or starts anything, cheapest first.

    check_target_options   options that make no sense on the target (--gpu on the laptop)
    preflight              SkyPilot's own credential check for the target's cloud (no API server)
    previous_run           the lineage: --from names a successful stage N-1 run
    check_fit_first        the pure memory-fit check, before any dataset or tokenizer is touched
    check_estimate         the estimate with the real token count against the budget (planning/budget.py)
    hub_offline_if_unreachable   no network: the hub libraries read their caches instead of retrying

Each refusal is a UserError: one line, exit 2, no run recorded.
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlsplit

from amigo_burst import planner
from amigo_burst.clouds import CLOUDS
from amigo_burst.config import AmigoConfig
from amigo_burst.errors import UserError
from amigo_burst.planning.budget import AUTODOWN_IDLE_MIN, KILL_GRACE_S, Limits, limits
from amigo_burst.planning.matrix import Cell
from amigo_burst.planning.units import hours_text
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


def previous_run(stage: int, from_run: str | None, from_base: bool, runs: RunStore) -> Run | None:
    """The run whose adapter this stage continues: --from RUN (a successful stage N-1 run), else the
    newest successful stage N-1 run; None for stage 1 and --from-base."""
    if from_base:
        return None
    if from_run:
        prev = runs.get(from_run)
        if stage == 1:
            raise UserError(f"--from {prev.id}: stage 1 starts from the base model; --from is for stages 2-5")
        if prev.stage != stage - 1:
            raise UserError(f"--from {prev.id}: that is a stage {prev.stage} run; stage {stage} continues from a "
                            f"stage {stage - 1} run (`amigo-burst status` lists them)")
        if prev.status != "SUCCEEDED":
            raise UserError(f"--from {prev.id}: that run is {prev.status}, not SUCCEEDED")
        return prev
    if stage == 1:
        return None
    prev = runs.latest(stage - 1)
    if prev is None:
        raise UserError(
            f"stage {stage} starts from the stage {stage - 1} adapter, and no stage {stage - 1} run succeeded: "
            f"run stage {stage - 1} first, or pass --from RUN or --from-base"
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
    reachable = []
    # the hub the libraries will ask: HF_ENDPOINT (a mirror, a company proxy) when set
    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)

    def probe() -> None:  # DNS has no timeout of its own: the probe runs in a thread we stop waiting for
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            reachable.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout_s)
    if reachable:
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
    rate = (lim.usd_per_hour if lim is not None else None) or est.max_usd_per_hour or est.usd_per_hour
    dollars = limits(budget.usd, None, rate, cloud=not target.is_local)
    if est.fits and budget.usd is not None and rate and not dollars.allows(est.hours):
        after_cap = "" if target.is_local else (f" less {KILL_GRACE_S // 60} min to save and {AUTODOWN_IDLE_MIN} "
                                                "min idle before autodown")
        raise UserError(f"estimated ${est.usd:.2f} ({hours_text(est.hours)} at ${rate:.2f}/h) exceeds the "
                        f"${budget.usd:.2f} budget{why}: within it the job may take {hours_text(dollars.allow_s / 3600)} "
                        f"(90% of what it buys{after_cap}): {fix} or pass --force")
    if not est.fits:
        raise UserError(f"stage {stage} does not fit {target.name} ({est.reason or 'not enough GPU memory'}): "
                        "pick another --cloud, or --force")
