"""`amigo-burst rehearse`: the whole configured plan, as it will run, on a tiny stand-in, here, in minutes.

Every stage runs with its real data source (N rows drawn by the seeded shuffle), its column map,
filters and max_seq_len, its hyperparameters (K optimizer steps), the adapter of the stage before
it, the plan's method and micro-batch x grad-accum for the machine the plan rents (rehearsal_plan.py),
and its target's own YAML (`setup` and `run`) executed by the local runner: a cloud target's
file is copied into the rehearsal as `local-<name>.yaml`, which the runner treats as this machine.
The model is a stand-in: a tiny random-weight model of the base's family with the base's tokenizer
when it is in the Hugging Face cache (train/tiny.py --like), else the built-in tokenizer.

Nothing is forced: a stage a real `launch` would refuse (it does not fit its machine, it is over its
budget) fails the rehearsal with that reason. Each cloud target's SkyPilot task, as a launch of the
plan builds it, goes through SkyPilot's own validation (offline). `--full` also runs the targets'
setup (train/setup.sh) in a fresh virtual environment, the install a rented machine does, and trains
in it.

Nothing touches the project's own records or store: the rehearsal is a project of its own in
.amigo/rehearsal/project/ (rebuilt each time). A rehearsal in which every stage passed is recorded
against a hash of the config (rehearsal.json); `launch` and `pipeline` on a paid cloud warn when
the current config has none.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from amigo_burst.config import AmigoConfig, load_config
from amigo_burst.errors import UserError
from amigo_burst.lifecycle.basemodel import check_model_folder
from amigo_burst.lifecycle.follow import Detached, parse_progress
from amigo_burst.lifecycle.launch import LaunchOptions, launch, resolve_target
from amigo_burst.lifecycle.prepare import load_tokenizer, prepare_stage, prepared_on_target
from amigo_burst.lifecycle.rehearsal_plan import StagePlan, check_sky_tasks, stage_plans
from amigo_burst.lifecycle.rehearsal_record import config_hash, rehearsal_dir
from amigo_burst.lifecycle.rehearse_guard import stop_live_runs
from amigo_burst.stages import get_stage
from amigo_burst.state import paths
from amigo_burst.targets import get_target

REHEARSAL_EVAL_PROBLEMS = 1  # HumanEval problems after each rehearsed stage
REHEARSAL_EVAL_TOKENS = 32  # per answer


@dataclass(kw_only=True, frozen=True)
class RehearseOptions:
    rows: int = 64  # rows per stage, drawn by the dataset's seeded shuffle
    steps: int = 2  # optimizer steps per stage
    model: str | None = None  # a model folder to use instead of the stand-in
    full: bool = False  # also the targets' setup in a fresh virtual environment, and training in it

    def __post_init__(self) -> None:
        if self.rows < 1 or self.steps < 1:
            raise UserError("--rows and --steps must be >= 1")


@dataclass
class StageResult:
    stage: int
    name: str
    target: str  # the configured target whose YAML ran
    prepared: str = ""  # where the data was prepared: here, or target (a hub dataset the target fetches)
    status: str = "not run"  # passed | failed | not run
    reason: str = ""
    run_id: str | None = None
    rows: dict = field(default_factory=dict)  # read, used, dropped
    dropped: list = field(default_factory=list)  # [{reason, count, first}]
    trimmed: dict = field(default_factory=dict)  # {count, first}
    tokens: int = 0
    longest: int = 0
    max_seq_len: int = 0
    loss: dict = field(default_factory=dict)  # {before, after, steps}
    adapter: str | None = None
    continues_from: str | None = None  # the run whose adapter this stage started from
    seconds: float = 0.0
    plan: dict = field(default_factory=dict)  # the real launch's machine, method, micro_batch, grad_accum, gpu_count
    ran: dict = field(default_factory=dict)  # what the rehearsal trained with: method, micro_batch, grad_accum


# --- the rehearsal project ------------------------------------------------------------------------


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return json.dumps(v)  # 5e-06, 0.0002: valid TOML floats
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items()) + " }"


def toml_dump(doc: dict) -> str:
    """The config as TOML: one [table] per section, [stages.N] per stage (values inline)."""
    out = []
    for section, body in doc.items():
        tables = {f"stages.{n}": s for n, s in body.items()} if section == "stages" else {section: body}
        for name, table in tables.items():
            out.append(f"[{name}]")
            out += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in table.items() if v is not None]
            out.append("")
    return "\n".join(out)


def stage_target(cfg: AmigoConfig, n: int) -> str:
    """The target `launch --stage N` uses: the stage's own, else [targets].cloud."""
    return resolve_target(cfg, n, None).name


def write_project(cfg: AmigoConfig, project: Path, model: Path, opts: RehearseOptions,
                  plans: dict[int, StagePlan] | None = None, python: str | None = None) -> dict[int, str]:
    """The rehearsal project: amigo.toml with the stand-in, N rows, K steps, each stage on a local
    copy of its target's YAML, its hub data prepared where the real launch will prepare it, and the
    plan's method and micro-batch x grad-accum (plans). python: the fresh environment of --full.
    Returns {stage: rehearsal target name}."""
    (project / "sky").mkdir(parents=True)
    local_names = {}
    for n in sorted(cfg.stages):
        t = get_target(stage_target(cfg, n), cfg.root)
        name = t.name if t.is_local else f"local-{t.name}"
        shutil.copyfile(t.path, project / "sky" / f"{name}.yaml")
        if python:  # --full: setup.sh installs a fresh machine's stack (CPU torch here) into that python
            _fresh_envs(project / "sky" / f"{name}.yaml", python)
        local_names[n] = name
    doc = cfg.model_dump(mode="json", exclude_none=True)
    doc["model"]["base"] = str(model)
    # the stand-in's own estimate (the rehearsal's launch checks fit and budget like any launch): tiny; the
    # real plan's method for the whole chain, as a real launch of stage 1 picks it and later stages keep it
    doc["model"]["arch"] = "tiny"
    if plans:
        doc["model"]["method"] = plans[min(plans)].method
    doc["store"] = {"url": "file://.amigo/store"}
    # the benchmark after each stage runs as run.sh runs it, on one problem with short answers: a tiny
    # random model's 164 answers prove nothing and took ~10 min a stage here (0 stays 0: no benchmark)
    limit = cfg.eval.limit if cfg.eval.limit is not None else REHEARSAL_EVAL_PROBLEMS
    doc["eval"] = {"limit": min(limit, REHEARSAL_EVAL_PROBLEMS),
                   "max_new_tokens": min(cfg.eval.max_new_tokens, REHEARSAL_EVAL_TOKENS)}
    doc["targets"] = {"cloud": local_names[max(local_names)], "local": local_names[min(local_names)]}
    for n, s in doc["stages"].items():
        ds = s["dataset"]
        if ds.get("path"):
            ds["path"] = str(cfg.resolve(ds["path"]))
        if prepared_on_target(cfg, int(n), get_target(stage_target(cfg, int(n)), cfg.root).is_local):
            ds["prepare"] = "target"  # as the real launch will: the target's run.sh fetches and prepares it
        ds["max_rows"] = opts.rows
        s["max_steps"] = opts.steps
        s["target"] = local_names[int(n)]
        if plans:  # the micro-batch x grad-accum the real launch hands the trainer (per GPU)
            s["micro_batch"], s["grad_accum"] = plans[int(n)].micro_batch, plans[int(n)].grad_accum
    (project / "amigo.toml").write_text(f"# amigo-burst rehearse of {cfg.path}\n" + toml_dump(doc))
    return local_names


def standin(cfg: AmigoConfig, console) -> tuple[Path, dict]:
    """The stand-in model, built once per (base, arch) into .amigo/rehearsal/standin-<hash>/."""
    base = cfg.resolve(cfg.model.base)
    like = str(base) if base.exists() else cfg.model.base
    key = hashlib.sha256(f"{like}|{cfg.model.arch}".encode()).hexdigest()[:12]
    out = rehearsal_dir(cfg.root) / f"standin-{key}"
    if not (out / "standin.json").is_file():
        console.print(f"building the stand-in for {like} (tiny, random weights)")
        shutil.rmtree(out, ignore_errors=True)
        r = subprocess.run([sys.executable, "-m", "train.tiny", "--out", str(out), "--like", like,
                            "--family-hint", cfg.model.arch], capture_output=True, text=True)
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["exit code " + str(r.returncode)])[-1]
            raise UserError(f"could not build the stand-in model: {last[:300]}")
    return out, json.loads((out / "standin.json").read_text())


# --- running it -----------------------------------------------------------------------------------


def losses(log: Path) -> dict:
    """First and last logged training loss of a run (AMIGO_PROGRESS lines of its train.log)."""
    points = []
    if log.is_file():
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            p = parse_progress(line)
            if p and isinstance(p.get("loss"), (int, float)):
                points.append(p)
    if not points:
        return {}
    return {"before": points[0]["loss"], "after": points[-1]["loss"], "steps": points[-1].get("step")}


def _data_into(res: StageResult, data: dict) -> None:
    res.prepared = data.get("where", "")
    res.rows = {k: data.get(k, 0) for k in ("read", "used", "dropped")}
    res.dropped = [{"reason": r, "count": c, "first": w}
                   for r, (c, w) in sorted({**data.get("unusable", {}), **data.get("filtered", {})}.items(),
                                           key=lambda kv: -kv[1][0])]
    count, first = data.get("trimmed") or [0, ""]
    res.trimmed = {"count": count, "first": first} if count else {}
    res.tokens, res.longest, res.max_seq_len = data.get("tokens", 0), data.get("longest", 0), data.get("max_len", 0)


def _judge(res: StageResult, run, previous: str | None, d: Path) -> None:
    """passed: SUCCEEDED, an adapter written, started from the previous stage's, the loss finite."""
    res.loss = losses(d / "train.log")
    adapter = d / "adapter" / "adapter_model.safetensors"
    res.adapter = str(adapter.parent) if adapter.is_file() else None
    res.continues_from = run.artifacts.get("from_run")
    problems = []
    if run.status != "SUCCEEDED":
        problems.append(f"{run.status}: {run.reason or 'no reason recorded'}")
    if res.adapter is None:
        problems.append("no adapter written")
    if previous and res.continues_from != previous:
        problems.append(f"did not continue from {previous}")
    if not res.loss or not all(math.isfinite(res.loss[k]) for k in ("before", "after")):
        problems.append("no finite training loss logged")
    res.status, res.reason = ("failed", "; ".join(problems)) if problems else ("passed", "")


def run_stage(rcfg: AmigoConfig, n: int, local_target: str, shown: str, previous: str | None,
              log_console, plan: StagePlan | None = None) -> StageResult:
    """Launch stage n of the rehearsal project as a real launch would run it: nothing forced, the plan's
    method and batch; a stage the real launch would refuse fails here with that reason, untrained."""
    res = StageResult(stage=n, name=get_stage(n).name, target=shown)
    if plan is not None:
        res.plan = {"machine": plan.machine, "method": plan.method, "micro_batch": plan.micro_batch,
                    "grad_accum": plan.grad_accum, "gpu_count": plan.gpu_count}
        if plan.refused:
            res.status, res.reason = "failed", f"`launch --stage {n}` would be refused: {plan.refused}"
            return res
    t0 = time.monotonic()
    try:
        run = launch(rcfg, LaunchOptions(stage=n, cloud=local_target), log_console)
    except UserError as e:
        res.status, res.reason = "failed", str(e)
        res.seconds = time.monotonic() - t0
        return res
    res.run_id = run.id
    _data_into(res, run.artifacts.get("dataset", {}))
    _judge(res, run, previous, paths.run_dir(rcfg.root, run.id))
    m = run.metrics or {}
    res.ran = {"method": m.get("method"), "micro_batch": m.get("per_device_train_batch_size"),
               "grad_accum": m.get("gradient_accumulation_steps")}
    want = {k: res.plan[k] for k in ("method", "micro_batch", "grad_accum")} if plan is not None else res.ran
    if res.status == "passed" and res.ran != want:
        res.status, res.reason = "failed", f"trained {res.ran}, the plan runs {want}"
    res.seconds = time.monotonic() - t0
    return res


def check_data_only(rcfg: AmigoConfig, n: int, res: StageResult, tokenizer) -> None:
    """A stage after a failed one cannot train (no adapter to continue): its data is still checked."""
    try:
        p = prepare_stage(rcfg, get_stage(n), paths.prepared_dir(rcfg.root), tokenizer)
        _data_into(res, p.record())
        res.reason = "not trained: an earlier stage failed (its data was checked)"
    except UserError as e:
        res.status, res.reason = "failed", str(e)


def rehearse(cfg: AmigoConfig, opts: RehearseOptions, console, log_console) -> tuple[bool, list[StageResult], dict]:
    """Run the rehearsal; returns (passed, per-stage results, facts for the report)."""
    d = rehearsal_dir(cfg.root)
    project = d / "project"
    if opts.model:  # checked as a base model is, before stage 1 trains on it
        model = Path(opts.model).expanduser().resolve()
        check_model_folder(model, f"--model {opts.model}")
        info = {"like": cfg.model.base, "family": "given", "tokenizer": "the model's own", "path": str(model)}
    else:
        model, info = standin(cfg, console)
        info = {**info, "path": str(model)}
    stop_live_runs(project)  # a stage an earlier, killed rehearsal left training
    plans = stage_plans(cfg)
    sky = check_sky_tasks(cfg)
    setup = fresh_setup(d, console, log_console) if opts.full else None
    shutil.rmtree(project, ignore_errors=True)  # a fresh project: records and store of this rehearsal only
    names = write_project(cfg, project, model, opts, plans, setup["python"] if setup else None)
    rcfg = load_config(project / "amigo.toml")
    try:
        results = _stages(cfg, rcfg, names, opts, plans, console, log_console)
    except (KeyboardInterrupt, Detached):  # Ctrl-C: the stage's training stops with us, nothing orphaned
        stop_live_runs(project)
        raise KeyboardInterrupt from None
    passed = all(r.status == "passed" for r in results) and not any(sky.values())
    facts = {"config_hash": config_hash(cfg), "model": info, "rows": opts.rows, "steps": opts.steps,
             "project": str(project), "sky": sky, **({"setup": setup} if setup else {})}
    _record(cfg, passed, results, facts)
    return passed, results, facts


def _stages(cfg: AmigoConfig, rcfg: AmigoConfig, names: dict[int, str], opts: RehearseOptions, plans: dict,
            console, log_console) -> list[StageResult]:
    results, previous, failed = [], None, False
    for n in sorted(cfg.stages):
        if failed:
            res = StageResult(stage=n, name=get_stage(n).name, target=stage_target(cfg, n))
            check_data_only(rcfg, n, res, load_tokenizer(rcfg))
        else:
            p = plans[n]
            console.print(f"stage {n} ({get_stage(n).name}): {opts.rows} rows, {opts.steps} steps, {p.method} "
                          f"{p.micro_batch}x{p.grad_accum} as on {p.machine}, {stage_target(cfg, n)}'s YAML "
                          "through the local runner ...")
            res = run_stage(rcfg, n, names[n], stage_target(cfg, n), previous, log_console, p)
            failed = res.status != "passed"
            previous = res.run_id
        results.append(res)
    return results


def _fresh_envs(yaml_path: Path, python: str) -> None:
    """--full: the rehearsal's copy of a target YAML installs into the fresh python, the torch build this
    machine runs (a CPU laptop cannot use the CUDA one a rented GPU gets; the rest is the same pins)."""
    import torch
    import yaml

    doc = yaml.safe_load(yaml_path.read_text())
    doc.setdefault("envs", {}).update({"AMIGO_PYTHON": python,
                                       "AMIGO_TORCH_SPEC": f"torch=={torch.__version__.split('+')[0]}"})
    yaml_path.write_text(yaml.safe_dump(doc, sort_keys=False))


def fresh_setup(d: Path, console, log_console) -> dict:
    """--full: a new virtual environment with nothing installed (a rented machine's bare python3), the
    targets' setup (train/setup.sh: torch, then train/requirements.txt's pins) run into it and timed.
    The local runner then uses this python (AMIGO_LOCAL_PYTHON): every stage trains with what setup.sh
    installed, and each stage's own setup takes the path of a machine that already has it."""
    import os

    import torch

    from amigo_burst.targets import REPO_ROOT

    venv = d / "fresh-venv"
    shutil.rmtree(venv, ignore_errors=True)
    console.print(f"--full: a fresh environment in {venv}, the targets' setup (train/setup.sh) installing into it")
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
    if r.returncode != 0:
        raise UserError(f"--full: could not create a virtual environment: {(r.stderr.strip() or 'venv')[-300:]}")
    python = str(venv / "bin" / "python")
    spec = f"torch=={torch.__version__.split('+')[0]}"  # this machine's build (CPU here); a GPU machine: CUDA
    t1 = time.monotonic()
    r = subprocess.run(["bash", "train/setup.sh"], cwd=REPO_ROOT, capture_output=True, text=True,
                       env={**os.environ, "AMIGO_PYTHON": python, "AMIGO_TORCH_SPEC": spec})
    log_console.print(r.stdout + r.stderr, markup=False, highlight=False)
    if r.returncode != 0:
        last = ((r.stderr or r.stdout).strip().splitlines() or [f"exit code {r.returncode}"])[-1]
        raise UserError(f"--full: the targets' setup failed in a fresh environment: {last[:300]}")
    setup_s = round(time.monotonic() - t1, 1)
    console.print(f"--full: setup installed the training stack in {setup_s:.0f} s")
    os.environ["AMIGO_LOCAL_PYTHON"] = python  # the workers (and their local runner) inherit it
    return {"python": python, "venv_s": round(t1 - t0, 1), "setup_s": setup_s, "torch_spec": spec}


def _record(cfg: AmigoConfig, passed: bool, results: list[StageResult], facts: dict) -> None:
    """rehearsal.json: the last rehearsal (passed or not) against the config hash it ran."""
    p = rehearsal_dir(cfg.root) / "rehearsal.json"
    doc = {"passed": passed, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **facts,
           "stages": [asdict(r) for r in results]}
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(p)
