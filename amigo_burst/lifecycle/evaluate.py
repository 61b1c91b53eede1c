"""`amigo-burst eval`: HumanEval pass@1 of a stage's adapter (or of the base: stage 0), here or on a target.

    evaluate(cfg, EvalOptions(stage=2, limit=20))            this machine: `python -m train.humaneval`
    evaluate(cfg, EvalOptions(stage=0))                      the base, prompted as its stages are (the baseline)
    evaluate(cfg, EvalOptions(stage=2, cloud="slurm"))       a target: the benchmark alone, run like a stage

Here: train/loader.py's rules (the method the stage trained with; a GPU when there is one). On a target the
benchmark is a run of its own, recorded like a stage's (artifacts["eval"]: the run it scores) and handed to
the same worker: inputs through the store or the workdir, the target YAML's setup and run.sh with
AMIGO_TASK=eval, the log streamed and reattachable (`logs RUN -f`, reconcile), the outputs brought back,
the cluster torn down, and a time cap from the stage's budget (the benchmark stops between batches and
says `partial`). `runs.latest`, `done_runs` and the report never take it for the stage's training run.

Each evaluation keeps its files in .amigo/evals/<id>/ (metrics.json, humaneval.jsonl, eval.log).
The result: {stage, benchmark, problems, passed, pass_at_1, ...} (train/humaneval.py's summary).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from amigo_burst import planner
from amigo_burst.config import AmigoConfig
from amigo_burst.errors import UserError
from amigo_burst.lifecycle.baseline import eval_key
from amigo_burst.lifecycle.models import StageModel, _resolved_base, local_base, stage_model
from amigo_burst.runners.local import run_step
from amigo_burst.secrets import load_secrets, redact
from amigo_burst.state import ids, paths
from amigo_burst.state.records import open_records
from amigo_burst.targets import Target, get_target

KEYS = ("stage", "benchmark", "problems", "passed", "pass_at_1")  # the stable head of `eval --json`


@dataclass(kw_only=True)
class EvalOptions:
    stage: str | int
    run_id: str | None = None
    limit: int | None = None  # None: [eval] limit of amigo.toml, else all 164
    max_new_tokens: int | None = None
    cloud: str | None = None  # None: this machine
    device: str = "auto"
    gpu: str | None = None

    def __post_init__(self) -> None:
        if self.limit is not None and not 1 <= self.limit <= 164:
            raise UserError(f"--limit {self.limit}: HumanEval has 164 problems (1-164)")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise UserError("--max-new-tokens must be >= 1")
        if self.device not in ("auto", "cpu", "cuda"):
            raise UserError(f"--device {self.device}: auto, cpu or cuda")
        if str(self.stage) == "0" and (self.cloud or self.run_id):
            raise UserError("--stage 0 (the base) is scored here; on a target the first stage's job scores it "
                            "with the same settings (train/run.sh, humaneval --baseline)")


def evals_dir(root: Path, eval_id: str) -> Path:
    return paths.state_dir(root) / "evals" / eval_id


def evaluate(cfg: AmigoConfig, opts: EvalOptions, on_line: Callable[[str], None] = print, console=None) -> dict:
    """Run the benchmark; returns the result dict (KEYS first)."""
    target = get_target(opts.cloud, cfg.root) if opts.cloud else None  # an unknown target fails first
    sm = stage_model(cfg, opts.stage, opts.run_id) if str(opts.stage) != "0" else None
    limit = opts.limit if opts.limit is not None else (cfg.eval.limit or None)
    max_new = opts.max_new_tokens or cfg.eval.max_new_tokens
    stage = sm.stage if sm else 0
    what = f"stage {stage} adapter of {sm.run.id}" if sm else "the base (stage 0)"
    if target is not None:
        run = _on_target(cfg, sm, target, limit, max_new, opts.gpu, on_line, console)
        eval_id, where = f"eval-{run.id}", target.name
        out = evals_dir(cfg.root, eval_id)
        out.mkdir(parents=True)
        d = paths.run_dir(cfg.root, run.id)
        for src, name in (("metrics.json", "metrics.json"), ("humaneval.jsonl", "humaneval.jsonl"),
                          ("train.log", "eval.log")):
            if (d / src).is_file():
                shutil.copy2(d / src, out / name)
        rc = 0 if run.status == "SUCCEEDED" else 1
    else:
        eval_id, where = "eval-" + ids.new_run_id(stage, "here"), "here"
        out = evals_dir(cfg.root, eval_id)
        out.mkdir(parents=True)
        secrets = load_secrets(cfg.root)
        with (out / "eval.log").open("a", encoding="utf-8") as log:
            def sink(line: str) -> None:
                line = redact(line, secrets)
                log.write(line + "\n")
                log.flush()
                on_line(line)

            on_line(f"{eval_id}: {what}, {limit or 164} problems, on this machine")
            children: list[int] = []  # the benchmark's process group (its own session: Ctrl-C does not reach it)
            try:
                rc = _here(cfg, sm, out, limit, max_new, opts.device, secrets, sink, children.append)
            except KeyboardInterrupt:  # Ctrl-C: the benchmark stops too, and no folder holding only a log stays
                for pid in children:
                    _stop_group(pid)
                shutil.rmtree(out, ignore_errors=True)
                raise
    metrics = out / "metrics.json"
    summary = json.loads(metrics.read_text()).get("humaneval") if metrics.is_file() else None
    if rc != 0 or not summary:
        raise UserError(f"the benchmark failed (exit {rc}): see {out / 'eval.log'}")
    return {"stage": stage, **{k: summary[k] for k in KEYS[1:]}, "run": sm.run.id if sm else None,
            "eval_id": eval_id, "where": where, **{k: v for k, v in summary.items() if k not in KEYS}}


def _stop_group(pid: int, grace_s: float = 10.0) -> None:
    """SIGTERM the benchmark's process group and wait for its leader (our child) to end - it may finish
    the problem in flight - then SIGKILL whatever of the group is left: nothing outlives `eval`."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                break
        except ChildProcessError:  # not ours to reap, or reaped already
            break
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def base_method(cfg: AmigoConfig) -> str:
    """How the base is loaded for stage 0: as the project's stages load it (their newest recorded method)."""
    for run in reversed(open_records(cfg.root).list()):
        if run.status == "SUCCEEDED" and (run.metrics or {}).get("method") in ("lora", "qlora"):
            return run.metrics["method"]
    return cfg.model.method if cfg.model.method in ("lora", "qlora") else "lora"


def _here(cfg, sm: StageModel | None, out: Path, limit, max_new: int, device: str, secrets, sink,
          on_start=None) -> int:
    method = sm.method if sm else base_method(cfg)
    base = local_base(cfg, sm) if sm else _resolved_base(cfg)
    argv = [sys.executable, "-m", "train.humaneval", "--model", base, "--method", "auto" if sm else method,
            "--device", device, "--max-new-tokens", str(max_new), "--output-dir", str(out),
            "--key", eval_key(cfg.model_copy(update={"eval": cfg.eval.model_copy(
                update={"limit": limit, "max_new_tokens": max_new})}), method)]
    argv += ["--adapter", str(sm.adapter)] if sm else ["--prompt", "chat"]  # the base: its stages' template
    if limit:
        argv += ["--limit", str(limit)]
    env = {**os.environ, **secrets, "PYTHONUNBUFFERED": "1"}  # a gated hub base needs HF_TOKEN
    return run_step(shlex.join(argv), cfg.root, env, sink, on_start)


def _on_target(cfg, sm: StageModel, target: Target, limit, max_new: int, gpu, on_line, console):
    """The benchmark as a recorded run handed to the worker (handoff.spawn_worker): run.sh with
    AMIGO_TASK=eval on the stage's adapter, followed here like a launch (Ctrl-C detaches; it goes on)."""
    from rich.console import Console

    from amigo_burst.lifecycle import money
    from amigo_burst.lifecycle.follow import follow
    from amigo_burst.lifecycle.handoff import LaunchPlan, spawn_worker, write_plan
    from amigo_burst.lifecycle.inputs import build_bundle, put_inputs, transport_envs
    from amigo_burst.lifecycle.launch import planned_gpu
    from amigo_burst.state.ledger import Ledger
    from amigo_burst.state.records import Run

    runs = open_records(cfg.root)
    try:  # the machine the plan picks for this stage on that target: its price and the budget's time cap
        cell = planner.estimate_for_target(cfg, sm.stage, target.name, gpu=gpu)
    except UserError:
        cell = None
    usd_h = cell.usd_per_hour if cell is not None else None
    # the launch's one budget rule: the job capped on the machine, its worst case counted in the ledger
    lim = money.limits_for(planner.budget_left(cfg, sm.stage, runs), cell, target)
    now = time.time()
    cap = lim.cap_s or lim.train_s  # on a rented machine its hard cap; here the benchmark's own time limit
    run_id = ids.new_run_id(sm.stage, target.alias)
    cluster = None if target.is_local else ids.cluster_name(run_id)
    run = Run(id=run_id, stage=sm.stage, target=target.name, cluster=cluster, status="PENDING", usd_per_hour=usd_h,
              pid=os.getpid(), artifacts={"eval": {"of": sm.run.id}, "from_run": sm.run.id})
    runs.claim_stage(sm.stage, run, attempt=money.attempt_row(run_id, sm.stage, lim, usd_h, now))
    try:
        workdir = paths.work_dir(cfg.root, run_id)
        workdir.mkdir(parents=True, exist_ok=True)
        build_bundle(workdir)
        transport = "store" if (target.is_local or cfg.store.url.startswith("s3://")) else "rsync"
        manifest = put_inputs(cfg, run_id, None, sm.adapter)[0] if transport == "store" else None
        base = local_base(cfg, sm)  # a folder the laptop has; the cluster reaches the hub id
        envs = {"AMIGO_TASK": "eval", "AMIGO_RUN_ID": run_id, "AMIGO_STAGE": str(sm.stage),
                "AMIGO_BASE_MODEL": base if Path(sm.base).exists() else sm.base,
                "AMIGO_METHOD": sm.method, "AMIGO_OUTPUT": "outputs", "AMIGO_SET": "", "AMIGO_MAX_RUNTIME_S": str(lim.train_s),
                "AMIGO_EVAL_LIMIT": str(limit or ""), "AMIGO_EVAL_MAX_NEW_TOKENS": str(max_new),
                "AMIGO_EVAL_KEY": eval_key(cfg, sm.method), "AMIGO_EVAL_BASELINE": "",
                **money.cap_envs(lim, now, cloud=not target.is_local),
                **transport_envs(cfg, transport, manifest, workdir, None, sm.adapter)}
        write_plan(cfg.root, LaunchPlan(run_id, str(cfg.path), target.name, cluster, envs, str(workdir), transport,
                                        False, False, planned_gpu(target, cell, gpu)))
        runs.update(run_id, pid=spawn_worker(cfg, run_id))
    except BaseException as e:
        runs.update(run_id, status="FAILED", reason=f"eval: {e}"[:300])
        Ledger(runs).close(run_id)
        raise
    on_line(f"eval run {run_id}: stage {sm.stage} adapter of {sm.run.id}, {limit or 164} problems, on {target.name}"
            + (f" (cluster {cluster})" if cluster else "") + (f", cap {cap}s" if cap else ""))
    return follow(cfg, run_id, console or Console(stderr=True, highlight=False))
