"""The launch loop, controller side: prepare -> store inputs -> record -> hand to a worker.

    launch(): stage dataset prepared and token-counted, the estimate checked against what this attempt
              may spend (money.py: the stage's budget less earlier attempts, within the project's),
              inputs (dataset, previous adapter, train/ code) put in the store, the run claimed in the
              state DB with its ledger row, the cap the machine enforces in its envs, launch.json
              written (handoff.py), and a detached worker started. `--resume`: resume.py.
    worker.py: runs the target (local subprocesses or SkyPilot), streams the log into
              .amigo/runs/<id>/train.log, brings outputs back, records the end.

The worker is its own session: closing the terminal or killing this process does not stop
training; `amigo-burst logs RUN -f` reattaches.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from amigo_burst import planner
from amigo_burst.config import AmigoConfig
from amigo_burst.errors import UserError, one_line
from amigo_burst.lifecycle import money, resume
from amigo_burst.lifecycle.baseline import baseline_envs
from amigo_burst.lifecycle.basemodel import check_base
from amigo_burst.lifecycle.download import ensure_downloaded
from amigo_burst.lifecycle.follow import follow
from amigo_burst.lifecycle.handoff import LaunchPlan, spawn_worker, write_plan
from amigo_burst.lifecycle.inputs import (
    BASE_MODEL_DIR,
    build_bundle,
    mb,
    model_to_send,
    put_inputs,
    transport_envs,
)
from amigo_burst.lifecycle.preflight import (
    check_estimate,
    check_fit_first,
    check_target_options,
    hub_offline_if_unreachable,
    preflight,
    previous_run,
)
from amigo_burst.lifecycle.prepare import load_tokenizer, stage_data
from amigo_burst.lifecycle.probe_limits import probe_cap_s, probe_rows_for
from amigo_burst.lifecycle.rehearsal_record import warn_unrehearsed
from amigo_burst.numbers import check_positive
from amigo_burst.planning.matrix import Cell
from amigo_burst.secrets import load_secrets
from amigo_burst.stages import get_stage
from amigo_burst.state import ids, paths
from amigo_burst.state.ledger import Ledger
from amigo_burst.state.records import Run, RunStore, open_records
from amigo_burst.state.store import open_from_config
from amigo_burst.targets import Target, get_target
from train.schema import ADAPTER_META


@dataclass(kw_only=True)
class LaunchOptions:
    stage: int
    cloud: str | None = None  # None: the stage's target, else [targets].cloud
    from_run: str | None = None
    from_base: bool = False
    max_usd: float | None = None  # the command line's budget (planner.budget_for: it wins over amigo.toml)
    detach: bool = False
    gpu: str | None = None
    spot: bool = False
    keep: bool = False
    force: bool = False
    resume: bool = False
    probe_steps: int | None = None  # a probe (lifecycle/probe.py): this many steps, recorded as a probe
    probe_max_s: int | None = None  # the probe's cap in seconds (None: from its estimated step time)
    cluster: str | None = None  # run on this (kept) cluster: `launch --probe` reuses the probe's
    warn_unrehearsed: bool = True  # False when the caller (pipeline) already warned once
    share_usd: float | None = None  # pipeline: the most this stage may spend of the project's money left

    def __post_init__(self) -> None:
        if self.from_run and self.from_base:
            raise UserError("--from and --from-base exclude each other")
        check_positive(self.max_usd, "--max-usd")  # nan and inf too: a budget is a real number of dollars


def resolve_target(cfg: AmigoConfig, stage: int, cloud: str | None) -> Target:
    name = cloud or cfg.stage(stage).target or cfg.targets.cloud
    return get_target(name, cfg.root)


def yaml_number(x: float | int) -> str:
    """A number as text that YAML reads back as the same number. YAML 1.1 (PyYAML) reads `5e-06`,
    Python's repr of 5e-6, as a *string*: its float syntax needs a dot and a signed exponent, so the
    mantissa gets one (`5.0e-06`). repr round-trips every float exactly."""
    if isinstance(x, int) and not isinstance(x, bool):
        return str(x)
    text = repr(float(x))
    mantissa, e, exp = text.partition("e")
    if e and "." not in mantissa:
        mantissa += ".0"
    if e and exp[0] not in "+-":
        exp = "+" + exp
    return mantissa + (e + exp if e else "")


def stage_envs(cfg: AmigoConfig, stage: int, run_id: str, method: str, max_runtime_s: int,
               est: Cell | None = None) -> dict[str, str]:
    """The AMIGO_* overrides for the target YAML's envs (non-secret only: envs are not redacted).

    micro_batch / grad_accum = "auto" run as the plan cell `est` sized them, per GPU (what was estimated
    and checked against the budget is what trains); the train/configs YAML's values only without a plan
    that fits.
    """
    sc = cfg.stage(stage)
    base = cfg.resolve(cfg.model.base)
    sets = [
        f"max_length={sc.max_seq_len}",
        f"learning_rate={yaml_number(sc.learning_rate)}",
        f"num_train_epochs={yaml_number(sc.epochs)}",
        f"lora_r={cfg.lora.r}",
        f"lora_alpha={cfg.lora.alpha}",
        f"lora_dropout={yaml_number(cfg.lora.dropout)}",
        f"lora_target_modules={','.join(cfg.lora.target_modules)}",
    ]
    planned = est is not None and est.fits
    if sc.micro_batch != "auto" or planned:
        sets.append(f"per_device_train_batch_size={sc.micro_batch if sc.micro_batch != 'auto' else est.micro_batch}")
    if sc.grad_accum != "auto" or planned:
        sets.append(f"gradient_accumulation_steps={sc.grad_accum if sc.grad_accum != 'auto' else est.grad_accum}")
    # validation and checkpoint cadence ([stages.N] in amigo.toml)
    sets += [f"eval_fraction={yaml_number(sc.eval_fraction)}", f"eval_max_rows={sc.eval_max_rows}",
             f"keep={sc.keep}", f"save_minutes={yaml_number(sc.save_minutes)}"]
    if sc.eval_steps:
        sets.append(f"eval_steps={sc.eval_steps}")
    if sc.max_steps:
        sets.append(f"max_steps={sc.max_steps}")
        if sc.max_steps <= 100:  # short runs: a progress line every step, not every 10th,
            half = max(1, sc.max_steps // 2)  # and a checkpoint and an eval half-way (the YAML's 100-200
            sets += ["logging_steps=1", f"save_steps={half}"]  # would be none: --resume needs one)
            if not sc.eval_steps:
                sets.append(f"eval_steps={half}")
    return {
        "AMIGO_RUN_ID": run_id,
        "AMIGO_STAGE": str(stage),
        "AMIGO_BASE_MODEL": str(base) if base.exists() else cfg.model.base,
        "AMIGO_METHOD": method,
        "AMIGO_TRAIN_CONFIG": f"train/configs/stage{stage}.yaml",
        "AMIGO_DATA": "inputs/data.jsonl",
        "AMIGO_OUTPUT": "outputs",
        "AMIGO_SET": " ".join(sets),
        "AMIGO_MAX_RUNTIME_S": str(max_runtime_s),
        # the HumanEval run after training (train/run.sh): "" all 164 problems, "0" none
        "AMIGO_EVAL_LIMIT": "" if cfg.eval.limit is None else str(cfg.eval.limit),
        "AMIGO_EVAL_MAX_NEW_TOKENS": str(cfg.eval.max_new_tokens),
    }


def planned_gpu(target: Target, est: Cell | None, override: str | None) -> str | list[str] | None:
    """What SkyPilot is asked to rent: --gpu when given (exactly that), else the plan's machine on that
    target then its fallbacks, in order (accelerator:count, pinned to an instance type where the name is
    ambiguous); None: the YAML's."""
    if override:
        return override
    return (est.launch_gpus or None) if est is not None and not target.is_local else None


def adapter_method(adapter: Path | None) -> str | None:
    """The method the previous adapter was trained with (its amigo_adapter.json), None if unrecorded."""
    meta_file = adapter / ADAPTER_META if adapter is not None else None
    if meta_file is None or not meta_file.is_file():
        return None
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{meta_file}: unreadable ({e.__class__.__name__})") from None
    method = meta.get("method") if isinstance(meta, dict) else None
    return method if method in ("lora", "qlora") else None


def choose_method(cfg: AmigoConfig, est: Cell | None, adapter: Path | None = None) -> str:
    """One method for the whole chain: a stage continuing an adapter trains as that adapter was trained
    (an NF4 base in one stage and a bf16 base in the next would change the model under the adapter).
    An explicit different [model] method is refused; otherwise the plan's choice, else qlora."""
    chained = adapter_method(adapter)
    if chained:
        if cfg.model.method not in ("auto", chained):
            raise UserError(
                f"[model] method = \"{cfg.model.method}\" but the adapter this stage continues was trained with "
                f"{chained}: set method = \"{chained}\" or \"auto\" in amigo.toml, or start over with --from-base"
            )
        return chained
    if cfg.model.method != "auto":
        return cfg.model.method
    return est.method if est is not None and est.method in ("lora", "qlora") else "qlora"


def same_batch(recorded: dict | None, est: Cell | None) -> Cell | None:
    """A resumed run trains with the micro-batch x grad-accum it started with: its checkpoint counts
    steps of that size (and calibration since then may size a new plan differently)."""
    rec = recorded or {}
    if est is None or not (isinstance(rec.get("micro_batch"), int) and isinstance(rec.get("grad_accum"), int)):
        return est
    return dataclasses.replace(est, micro_batch=rec["micro_batch"], grad_accum=rec["grad_accum"])


def resume_gpu_count(recorded: dict | None, gpu: str | None, target: Target) -> int | None:
    """A resumed cloud run rents as many GPUs as it trained on: its checkpoint counts steps of micro x accum x
    GPUs sequences, and another count would change the global batch under it. --gpu with another count is
    refused in one line; None when there is nothing to keep (a fresh run, the laptop)."""
    count = (recorded or {}).get("gpu_count")
    if target.is_local or not isinstance(count, int) or count < 1:
        return None
    asked = gpu.partition("@")[0].partition(":")[2] if gpu else ""
    if asked and asked != str(count):
        raise UserError(f"--resume: the run trained on {count} GPUs; --gpu {gpu} asks for {asked}, which changes "
                        f"the global batch under its checkpoint: use --gpu NAME:{count}, or start over without --resume")
    return count


def launch(cfg: AmigoConfig, opts: LaunchOptions, console) -> Run:
    """Prepare, store inputs, claim and start a run; follow it unless --detach. Returns the final Run.

    Everything that can refuse without side effects runs first, in order of cost: options vs target,
    the cloud's credentials (SkyPilot's check), the lineage of --from, the memory fit (pure), the store;
    only then the dataset is read and a run recorded."""
    from rich.markup import escape

    spec = get_stage(opts.stage)
    target = resolve_target(cfg, spec.number, opts.cloud)
    check_target_options(target, opts.gpu, opts.spot)
    if opts.spot and not cfg.store.url.startswith("s3://"):
        raise UserError("--spot needs an s3:// store: a preempted machine's checkpoints must outlive it ([store] url)")
    preflight(target)
    if opts.warn_unrehearsed:  # a warning, not a refusal: after the checks that do refuse
        warn_unrehearsed(cfg, [target.name], console)
    runs = open_records(cfg.root)
    if runs.read_only:
        raise UserError(f"{paths.state_dir(cfg.root)} is read-only here: a launch records its run and writes "
                        "its work copy there; it needs a writable .amigo/")
    parent = cfg.previous_stage(spec.number)
    prev = previous_run(spec.number, opts.from_run, opts.from_base, runs, parent=parent)
    if prev is not None and parent != spec.number - 1:  # a stage left out of amigo.toml: say what it continues
        console.print(escape(f"stage {spec.number} continues from stage {parent}'s adapter ({prev.id}): "
                             + ", ".join(f"[stages.{s}]" for s in range(parent + 1, spec.number))
                             + " not in amigo.toml"))
    check_fit_first(cfg, spec.number, target, opts.force, gpu=opts.gpu)
    check_base(cfg)  # a missing/broken base folder or an unreachable hub id: refused before a run or machine
    load_secrets(cfg.root)  # a malformed .env: here, not in the worker
    open_from_config(cfg, bars=False).list_manifests("inputs/")  # reachable? a wrong bucket costs nothing yet
    # --resume: which run and checkpoint, before any dataset is read (nothing to resume: say so, at once)
    point = resume.find(cfg, runs, spec.number) if opts.resume else None
    adapter = ensure_downloaded(cfg, prev.id) / "adapter" if prev is not None else None
    from_id = prev.id if prev is not None else None

    probe = opts.probe_steps is not None
    # a continued adapter fixes the method: estimate (micro-batch, memory, cost) for that one
    method = choose_method(cfg, None, adapter) if adapter_method(adapter) else None
    ecfg = cfg if method is None else cfg.model_copy(update={"model": cfg.model.model_copy(update={"method": method})})
    limit = probe_rows_for(ecfg, spec.number, target, opts) if probe else None  # only the rows its steps need

    if hub_offline_if_unreachable(cfg, spec.number):
        console.print("no network: the model hub is unreachable, using cached files only (HF_HUB_OFFLINE=1)")
    with console.status(f"preparing stage {spec.number} ({spec.name}) dataset"):
        data = stage_data(cfg, spec, target.is_local, paths.prepared_dir(cfg.root), load_tokenizer(cfg), limit=limit)
    console.print("dataset: " + data.line())
    count = resume_gpu_count(point.run.estimate if point else None, opts.gpu, target)
    est = planner.estimate_for_launch(ecfg, spec.number, target, data.tokens, gpu=opts.gpu, max_usd=opts.max_usd,
                                      cpu_fallback=probe, gpu_count=count)
    # a probe costs minutes, not the stage: only the fit is checked, and it is capped in time; a resume
    # gets what its earlier attempts left of the stage's budget; every attempt at most the project's rest
    budget = planner.Budget() if probe else planner.budget_left(cfg, spec.number, runs, max_usd=opts.max_usd,
                                                               resume_id=point.run.id if point else None,
                                                               share_usd=opts.share_usd)
    lim = money.limits_for(budget, est, target, probe_cap_s(est, opts) if probe else None)
    check_estimate(spec.number, target, est, budget, opts.force, lim)
    usd_h = est.usd_per_hour if est is not None else None

    if point is not None:
        est = same_batch(point.run.estimate, est)
        console.print(escape(point.line()), soft_wrap=True)
    run_id = point.run.id if point else ids.new_run_id(spec.number, target.alias)
    cluster = None if target.is_local else (opts.cluster or ids.cluster_name(run_id))
    artifacts = {"dataset": data.record(), **({"from_run": from_id} if from_id else {}),
                 **({"probe": True} if probe else {}), **({"spot": True} if opts.spot else {})}
    run = Run(id=run_id, stage=spec.number, target=target.name, cluster=cluster, status="PENDING",
              usd_per_hour=usd_h, estimate=est.to_record() if est is not None else {}, pid=os.getpid(),
              artifacts=artifacts)
    now = time.time()
    runs.claim_stage(spec.number, run, replace=point is not None,
                     attempt=money.attempt_row(run_id, spec.number, lim, usd_h, now))

    try:
        workdir = paths.work_dir(cfg.root, run_id)
        workdir.mkdir(parents=True, exist_ok=True)
        transport = "store" if (target.is_local or cfg.store.url.startswith("s3://")) else "rsync"
        model = model_to_send(cfg, target)
        manifest, sent, skipped = put_inputs(cfg, run_id, data.upload, adapter,
                                             model if transport == "store" else None)
        console.print(f"store: {mb(sent)} uploaded, {mb(skipped)} already there ({cfg.store.url})")
        build_bundle(workdir)
        envs = stage_envs(cfg, spec.number, run_id, choose_method(cfg, est, adapter), lim.train_s, est)
        envs.update(money.cap_envs(lim, now, cloud=not target.is_local))
        envs.update(baseline_envs(cfg, envs["AMIGO_METHOD"]))  # stage 0 scored in this job unless known
        if opts.spot:  # a SIGTERM there is a preemption: the entrypoint's exit_reason says so
            envs["AMIGO_SPOT"] = "1"
        if adapter is None and spec.number > 1:  # --from-base: the entrypoint must be told, not guess
            envs["AMIGO_SET"] += " from_base=true"
        if probe:  # K steps, a progress line each, no checkpoint, no validation, no benchmark
            envs["AMIGO_SET"] += f" max_steps={opts.probe_steps} logging_steps=1 save_steps={10**6} eval_fraction=0"
            envs["AMIGO_EVAL_LIMIT"] = "0"
        envs.update(transport_envs(cfg, transport, manifest, workdir, data.upload, adapter, model))
        if point is not None:  # the trainer refuses to start over when the checkpoint did not arrive
            envs["AMIGO_RESUME_STEP"] = str(point.step)
            if transport == "rsync":
                resume.place(cfg, point, workdir)
        if data.job is not None:  # the target fetches and prepares the hub dataset itself
            envs["AMIGO_PREPARE"] = json.dumps({k: data.job[k] for k in ("source", "max_length", "check")})
        if model is not None:  # the laptop's path means nothing there: the synced copy's
            envs["AMIGO_BASE_MODEL"] = f"inputs/{BASE_MODEL_DIR}"
        gpu = planned_gpu(target, est, opts.gpu)
        write_plan(cfg.root, LaunchPlan(run_id, str(cfg.path), target.name, cluster, envs, str(workdir),
                                        transport, opts.spot, opts.keep, gpu))
        runs.update(run_id, pid=spawn_worker(cfg, run_id))
    except KeyboardInterrupt:
        _not_started(runs, run_id, "launch interrupted (Ctrl-C) before the run started")
        raise
    except BaseException as e:
        _not_started(runs, run_id, one_line(f"launch: {e}"))
        raise
    console.print(f"run [bold]{run_id}[/bold] started on {target.name}"
                  + (f" (cluster {cluster})" if cluster else "")
                  + (f", budget {lim.train_s}s" if lim.train_s else ""))
    for line in (money.worst_case_line(lim, budget), money.no_bucket_line(cfg.store.url, target)):
        if line:
            console.print(escape(line), soft_wrap=True)
    if opts.detach:
        console.print(f"follow it with: amigo-burst logs {run_id} -f")
        return runs.get(run_id)
    return follow(cfg, run_id, console)


def _not_started(runs: RunStore, run_id: str, reason: str) -> None:
    runs.update(run_id, status="FAILED", reason=reason)
    Ledger(runs).close(run_id)
