"""The launch loop, controller side: prepare -> store inputs -> record -> hand to a worker.

    launch(): stage dataset prepared and token-counted, inputs (dataset, previous
              adapter, train/ code) put in the store, the run claimed in the state
              DB, a launch.json written, and a detached worker started.
    worker.py: runs the target (local subprocesses or SkyPilot), streams the log
              into .amigo/runs/<id>/train.log, brings outputs back, records the end.

The worker is its own session: closing the terminal or killing this process
does not stop training; `amigo-burst logs RUN -f` reattaches.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from amigo_burst.config import AmigoConfig
from amigo_burst.errors import UserError
from amigo_burst.stages import get_stage
from amigo_burst.targets import REPO_ROOT, Target, get_target

BUDGET_EXIT = 3  # train's exit code for "stopped by --max-runtime-s"
AUTOSTOP_IDLE_MIN = 10  # a cloud machine idle this long is torn down, even if the laptop is gone


@dataclass
class LaunchOptions:
    stage: int
    cloud: str | None = None  # None: the stage's target, else [targets]
    from_run: str | None = None
    from_base: bool = False
    max_usd: float | None = None
    detach: bool = False
    gpu: str | None = None
    spot: bool = False
    keep: bool = False
    force: bool = False
    resume: bool = False


@dataclass
class LaunchPlan:
    """Everything the worker needs, written to .amigo/runs/<id>/launch.json (no secrets)."""

    run_id: str
    config_path: str
    target: str
    cluster: str | None
    envs: dict[str, str]
    workdir: str
    transport: str  # "store" (outputs mirrored to the store) | "rsync" (pulled from the cluster)
    spot: bool
    keep: bool
    gpu: str | None


def state_dir(cfg: AmigoConfig) -> Path:
    return cfg.root / ".amigo"


def run_dir(cfg: AmigoConfig, run_id: str) -> Path:
    return state_dir(cfg) / "runs" / run_id


def run_store(cfg: AmigoConfig):
    from amigo_burst.runs import RunStore

    return RunStore(state_dir(cfg) / "state.db", create=False)  # made by the first write


def resolve_target(cfg: AmigoConfig, stage: int, cloud: str | None) -> Target:
    name = cloud or cfg.stage(stage).target or cfg.targets.cloud
    return get_target(name, cfg.root)


def previous_adapter(cfg: AmigoConfig, stage: int, opts: LaunchOptions, runs) -> tuple[Path | None, str | None]:
    """The adapter this stage continues from: --from RUN, else the newest successful stage N-1 run."""
    if opts.from_base:
        return None, None
    if opts.from_run:
        prev = runs.get(opts.from_run)
        if prev.status != "SUCCEEDED":
            raise UserError(f"--from {prev.id}: that run is {prev.status}, not SUCCEEDED")
    elif stage == 1:
        return None, None
    else:
        prev = runs.latest(stage - 1)
        if prev is None:
            raise UserError(
                f"stage {stage} starts from the stage {stage - 1} adapter, and no stage {stage - 1} run succeeded: "
                f"run stage {stage - 1} first, or pass --from RUN or --from-base"
            )
    adapter = ensure_downloaded(cfg, prev.id) / "adapter"
    return adapter, prev.id


def ensure_downloaded(cfg: AmigoConfig, run_id: str) -> Path:
    """The run's outputs in .amigo/runs/<id>/ (fetched from the store, verified, if missing)."""
    from amigo_burst.store import open_from_config

    dest = run_dir(cfg, run_id)
    adapter = dest / "adapter"
    # get_dir places files one by one (each verified) and leaves .partial/ behind when it fails:
    # a half-fetched adapter (config there, weights not) is fetched again, never handed out.
    complete = all((adapter / f).is_file() for f in ("adapter_config.json", "adapter_model.safetensors"))
    if not complete or (dest / ".partial").exists():
        open_from_config(cfg).get_dir(f"runs/{run_id}/outputs", dest)
    return dest


def build_bundle(workdir: Path) -> None:
    """The workdir every target gets: a copy of train/ (no secrets, no caches)."""
    from amigo_burst.secrets import SYNC_EXCLUDES

    if (workdir / "train").exists():
        shutil.rmtree(workdir / "train")
    shutil.copytree(REPO_ROOT / "train", workdir / "train", ignore=shutil.ignore_patterns(*SYNC_EXCLUDES))


def stage_envs(cfg: AmigoConfig, stage: int, run_id: str, method: str, max_runtime_s: int) -> dict[str, str]:
    """The AMIGO_* overrides for the target YAML's envs (non-secret only: envs are not redacted)."""
    sc = cfg.stage(stage)
    base = cfg.resolve(cfg.model.base)
    sets = [
        f"max_length={sc.max_seq_len}",
        f"learning_rate={sc.learning_rate}",
        f"num_train_epochs={sc.epochs}",
        f"lora_r={cfg.lora.r}",
        f"lora_alpha={cfg.lora.alpha}",
        f"lora_dropout={cfg.lora.dropout}",
        f"lora_target_modules={','.join(cfg.lora.target_modules)}",
    ]
    if sc.micro_batch != "auto":
        sets.append(f"per_device_train_batch_size={sc.micro_batch}")
    if sc.grad_accum != "auto":
        sets.append(f"gradient_accumulation_steps={sc.grad_accum}")
    if sc.max_steps:
        sets.append(f"max_steps={sc.max_steps}")
        if sc.max_steps <= 100:  # short runs: a progress line every step, not every 10th,
            sets.append("logging_steps=1")  # and a checkpoint half-way (the YAML's 200 would be
            sets.append(f"save_steps={max(1, sc.max_steps // 2)}")  # none: --resume needs one)
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
    }


def choose_method(cfg: AmigoConfig, estimate: dict | None) -> str:
    if cfg.model.method != "auto":
        return cfg.model.method
    return (estimate or {}).get("method") or "qlora"


def put_inputs(cfg: AmigoConfig, run_id: str, data: Path, adapter: Path | None) -> tuple[str, int, int]:
    """Dataset + previous adapter -> store manifest inputs/<run>; train/ code -> code/<run>. Returns (manifest, sent, skipped)."""
    from amigo_burst.store import open_from_config

    staging = state_dir(cfg) / "work" / run_id / "inputs-staging"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:  # a hard link: a multi-GB prepared dataset is not copied just to be hashed and uploaded
        os.link(data, staging / "data.jsonl")
    except OSError:  # another filesystem
        shutil.copy2(data, staging / "data.jsonl")
    if adapter is not None:
        shutil.copytree(adapter, staging / "adapter")
    store = open_from_config(cfg)
    sent = skipped = 0
    for src, name in ((staging, f"inputs/{run_id}"), (REPO_ROOT / "train", f"code/{run_id}")):
        t = store.put_dir(src, name)
        sent, skipped = sent + t.bytes_sent, skipped + t.bytes_skipped
    shutil.rmtree(staging)
    return f"inputs/{run_id}", sent, skipped


def spawn_worker(cfg: AmigoConfig, run_id: str) -> int:
    """Start the worker in its own session (it outlives this process). Returns its pid."""
    d = run_dir(cfg, run_id)
    log = open(d / "worker.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "amigo_burst.worker", str(cfg.path), run_id],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        cwd=cfg.root,
    )
    log.close()
    return proc.pid


def write_plan(cfg: AmigoConfig, plan: LaunchPlan) -> None:
    d = run_dir(cfg, plan.run_id)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / "launch.json.tmp"
    tmp.write_text(json.dumps(asdict(plan), indent=2))
    os.replace(tmp, d / "launch.json")


def read_plan(cfg: AmigoConfig, run_id: str) -> LaunchPlan:
    return LaunchPlan(**json.loads((run_dir(cfg, run_id) / "launch.json").read_text()))


def cluster_name(run_id: str) -> str:
    """SkyPilot cluster names: lowercase, start with a letter; the amigo- prefix marks ours for `down --all`."""
    return f"amigo-{run_id}".lower()


def budget_runtime_s(max_usd: float | None, usd_per_hour: float | None) -> int:
    """$ budget -> seconds of training at the target's price (0: no limit).

    e.g. $10 at $0.40/h = 25 h = 90,000 s. Setup and model download run inside the
    same machine-hours, so the entrypoint gets 90% of it and stops gracefully.
    """
    if not max_usd or not usd_per_hour:
        return 0
    return max(60, int(max_usd / usd_per_hour * 3600 * 0.9))


def launch(cfg: AmigoConfig, opts: LaunchOptions, console, estimator=None):
    """Prepare, store inputs, claim and start a run; follow it unless --detach. Returns the final Run."""
    from amigo_burst.prepare import load_tokenizer, prepare_stage
    from amigo_burst.runs import Run, new_run_id

    spec = get_stage(opts.stage)
    target = resolve_target(cfg, spec.number, opts.cloud)
    runs = run_store(cfg)
    adapter, from_id = previous_adapter(cfg, spec.number, opts, runs)
    if opts.spot and not cfg.store.url.startswith("s3://"):
        raise UserError("--spot needs an s3:// store: a preempted machine's checkpoints must outlive it ([store] url)")
    if opts.spot and target.is_local:
        raise UserError("--spot is for cloud targets")
    _store_reachable(cfg)  # before anything is written: a wrong bucket costs nothing

    with console.status(f"preparing stage {spec.number} ({spec.name}) dataset"):
        prepared = prepare_stage(cfg, spec, state_dir(cfg) / "prepared", load_tokenizer(cfg))
    console.print(f"dataset: {prepared.rows} rows, {prepared.tokens:,} tokens"
                  + ("" if prepared.tokens_exact else " (estimated: no tokenizer)"))

    est = estimator(cfg, spec.number, target, prepared.tokens, opts) if estimator else None
    usd_h = (est or {}).get("usd_per_hour")
    max_usd = opts.max_usd or cfg.stage(spec.number).max_usd
    if est and max_usd and est.get("usd") and est["usd"] > max_usd and not opts.force:
        raise UserError(f"estimated ${est['usd']:.2f} exceeds the ${max_usd:.2f} budget by ${est['usd'] - max_usd:.2f}: "
                        "raise --max-usd or pass --force")
    if est and est.get("fits") is False and not opts.force:
        raise UserError(f"stage {spec.number} does not fit {target.name} ({est.get('reason', 'not enough GPU memory')}): "
                        "pick another --cloud, or --force")
    max_runtime = budget_runtime_s(max_usd, usd_h)
    max_hours = cfg.stage(spec.number).max_hours
    if max_hours:
        max_runtime = min(max_runtime or 10**9, int(max_hours * 3600))

    resume_id = _resumable(runs, spec.number) if opts.resume else None
    run_id = resume_id or new_run_id(spec.number, target.alias)
    cluster = None if target.is_local else cluster_name(run_id)
    run = Run(id=run_id, stage=spec.number, target=target.name, cluster=cluster, status="PENDING",
              usd_per_hour=usd_h, estimate=est or {}, pid=os.getpid())
    runs.claim_stage(spec.number, run, replace=bool(resume_id))

    try:
        workdir = state_dir(cfg) / "work" / run_id
        workdir.mkdir(parents=True, exist_ok=True)
        manifest, sent, skipped = put_inputs(cfg, run_id, prepared.path, adapter)
        console.print(f"store: {_mb(sent)} uploaded, {_mb(skipped)} already there ({cfg.store.url})")
        build_bundle(workdir)
        envs = stage_envs(cfg, spec.number, run_id, choose_method(cfg, est), max_runtime)
        if adapter is None and spec.number > 1:  # --from-base: the entrypoint must be told, not guess
            envs["AMIGO_SET"] += " from_base=true"
        transport = "store" if (target.is_local or cfg.store.url.startswith("s3://")) else "rsync"
        envs.update(_transport_envs(cfg, transport, manifest, workdir, prepared.path, adapter))
        if from_id:
            runs.update(run_id, artifacts={"from_run": from_id})
        write_plan(cfg, LaunchPlan(run_id, str(cfg.path), target.name, cluster, envs, str(workdir),
                                   transport, opts.spot, opts.keep, opts.gpu))
        pid = spawn_worker(cfg, run_id)
        runs.update(run_id, pid=pid)
    except BaseException as e:
        runs.update(run_id, status="FAILED", reason=f"launch: {e}"[:300])
        raise
    console.print(f"run [bold]{run_id}[/bold] started on {target.name}"
                  + (f" (cluster {cluster})" if cluster else "")
                  + (f", budget {max_runtime}s" if max_runtime else ""))
    if opts.detach:
        console.print(f"follow it with: amigo-burst logs {run_id} -f")
        return runs.get(run_id)
    from amigo_burst.follow import follow

    return follow(cfg, run_id, console)


def _store_reachable(cfg: AmigoConfig) -> None:
    from amigo_burst.store import open_from_config

    open_from_config(cfg, bars=False).list_manifests("inputs/")


def _resumable(runs, stage: int) -> str | None:
    """The newest FAILED/STOPPED run of the stage (its checkpoints are reused), if any."""
    for status in ("FAILED", "STOPPED"):
        r = runs.latest(stage, status=status)
        if r:
            return r.id
    raise UserError(f"--resume: no FAILED or STOPPED stage {stage} run to resume")


def _transport_envs(cfg, transport, manifest, workdir: Path, data: Path, adapter: Path | None) -> dict[str, str]:
    if transport == "store":
        from amigo_burst.store import store_uri

        envs = {"AMIGO_INPUTS": manifest, "AMIGO_STORE_URI": store_uri(cfg),
                "AMIGO_STORE_ENDPOINT": cfg.store.endpoint_url or ""}
    else:  # rsync: the inputs travel inside the workdir
        inputs = workdir / "inputs"
        inputs.mkdir(exist_ok=True)
        shutil.copy2(data, inputs / "data.jsonl")
        if adapter is not None:
            shutil.copytree(adapter, inputs / "adapter", dirs_exist_ok=True)
        envs = {"AMIGO_INPUTS": "", "AMIGO_STORE_URI": "", "AMIGO_STORE_ENDPOINT": ""}
    envs["AMIGO_ADAPTER_FROM"] = "inputs/adapter" if adapter is not None else ""
    return envs


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n:,} bytes"
