"""`amigo-burst eval`: HumanEval pass@1 of a stage's adapter, here or on a target.

    evaluate(cfg, EvalOptions(stage=2, limit=20))            this machine: `python -m train.humaneval`
    evaluate(cfg, EvalOptions(stage=2, cloud="slurm"))       a target: the benchmark alone, launched
                                                             through the same YAML, runners and run.sh

Here: 4-bit (NF4) on a CUDA GPU, otherwise the CPU in fp32 (train/humaneval.py --method auto). On a
target: the method the stage trained with, as after training (run.sh with AMIGO_TASK=eval). The
adapter travels like a launch's inputs: in the workdir (local target, rsync transport) or through
an s3:// store; the outputs come back the same way; a cluster is torn down when it is done.

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from amigo_burst.config import AmigoConfig
from amigo_burst.errors import UserError
from amigo_burst.lifecycle.handoff import AUTOSTOP_IDLE_MIN
from amigo_burst.lifecycle.launch import build_bundle
from amigo_burst.lifecycle.models import StageModel, local_base, stage_model
from amigo_burst.runners import sky as skyr
from amigo_burst.runners.local import run_step, run_task
from amigo_burst.secrets import load_secrets, redact
from amigo_burst.state import ids, paths
from amigo_burst.state.store import open_from_config, store_uri
from amigo_burst.targets import Target, get_target
from train.storage import names as manifest_names

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


def evals_dir(root: Path, eval_id: str) -> Path:
    return paths.state_dir(root) / "evals" / eval_id


def evaluate(cfg: AmigoConfig, opts: EvalOptions, on_line: Callable[[str], None] = print) -> dict:
    """Run the benchmark; returns the result dict (KEYS first)."""
    target = get_target(opts.cloud, cfg.root) if opts.cloud else None  # an unknown target fails first
    sm = stage_model(cfg, opts.stage, opts.run_id)
    limit = opts.limit if opts.limit is not None else (cfg.eval.limit or None)
    max_new = opts.max_new_tokens or cfg.eval.max_new_tokens
    eval_id = "eval-" + ids.new_run_id(sm.stage, target.alias if target else "here")
    out = evals_dir(cfg.root, eval_id)
    secrets = load_secrets(cfg.root)
    out.mkdir(parents=True)
    children: list[int] = []  # the benchmark's process groups (own sessions: Ctrl-C does not reach them)
    try:
        rc = _run(cfg, sm, target, eval_id, out, limit, max_new, opts, secrets, on_line, children)
    except KeyboardInterrupt:  # Ctrl-C: the benchmark stops too, and no folder holding only a log stays
        for pid in children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(paths.work_dir(cfg.root, eval_id), ignore_errors=True)
        raise
    metrics = out / "metrics.json"
    if rc != 0 or not metrics.is_file():
        raise UserError(f"the benchmark failed (exit {rc}): see {out / 'eval.log'}")
    summary = json.loads(metrics.read_text())["humaneval"]
    return {"stage": sm.stage, **{k: summary[k] for k in KEYS[1:]}, "run": sm.run.id, "eval_id": eval_id,
            "where": target.name if target else "here", **{k: v for k, v in summary.items() if k not in KEYS}}


def _run(cfg, sm: StageModel, target, eval_id: str, out: Path, limit, max_new: int, opts: EvalOptions, secrets,
         on_line, children: list[int]) -> int:
    with (out / "eval.log").open("a", encoding="utf-8") as log:
        def sink(line: str) -> None:
            line = redact(line, secrets)
            log.write(line + "\n")
            log.flush()
            on_line(line)

        on_line(f"{eval_id}: stage {sm.stage} adapter of {sm.run.id}, "
                f"{limit or 164} problems, {'on ' + target.name if target else 'on this machine'}")
        if target is None:
            return _here(cfg, sm, out, limit, max_new, opts.device, secrets, sink, children.append)
        return _on_target(cfg, sm, target, eval_id, out, limit, max_new, opts.gpu, secrets, sink, children.append)


def _here(cfg, sm: StageModel, out: Path, limit, max_new: int, device: str, secrets, sink, on_start=None) -> int:
    argv = [sys.executable, "-m", "train.humaneval", "--model", local_base(cfg, sm), "--adapter", str(sm.adapter),
            "--method", "auto", "--device", device, "--max-new-tokens", str(max_new), "--output-dir", str(out)]
    if limit:
        argv += ["--limit", str(limit)]
    env = {**os.environ, **secrets, "PYTHONUNBUFFERED": "1"}  # a gated hub base needs HF_TOKEN
    return run_step(shlex.join(argv), cfg.root, env, sink, on_start)


def _envs(cfg, sm: StageModel, eval_id: str, limit, max_new: int, store_manifest: str | None) -> dict[str, str]:
    return {
        "AMIGO_TASK": "eval", "AMIGO_RUN_ID": eval_id, "AMIGO_STAGE": str(sm.stage),
        "AMIGO_BASE_MODEL": local_base(cfg, sm) if Path(sm.base).exists() else sm.base,
        "AMIGO_METHOD": sm.method, "AMIGO_ADAPTER_FROM": "inputs/adapter", "AMIGO_OUTPUT": "outputs",
        "AMIGO_EVAL_LIMIT": str(limit or ""), "AMIGO_EVAL_MAX_NEW_TOKENS": str(max_new), "AMIGO_MAX_RUNTIME_S": "0",
        "AMIGO_INPUTS": store_manifest or "", "AMIGO_SET": "",
        "AMIGO_STORE_URI": store_uri(cfg) if store_manifest else "",
        "AMIGO_STORE_ENDPOINT": (cfg.store.endpoint_url or "") if store_manifest else "",
    }


def _on_target(cfg, sm: StageModel, target: Target, eval_id: str, out: Path, limit, max_new: int, gpu,
               secrets, sink, on_start=None) -> int:
    """The target YAML's setup + run (run.sh, AMIGO_TASK=eval): locally, or on a cluster torn down after."""
    workdir = paths.work_dir(cfg.root, eval_id)
    workdir.mkdir(parents=True)
    build_bundle(workdir)
    via_store = not target.is_local and cfg.store.url.startswith("s3://")
    manifest = None
    if via_store:  # the cluster fetches the adapter from the bucket (run.sh: train.storage get)
        staging = workdir / ".inputs-staging"
        shutil.copytree(sm.adapter, staging / "adapter")
        manifest = manifest_names.inputs(eval_id)
        open_from_config(cfg, bars=False).put_dir(staging, manifest)
        shutil.rmtree(staging)
    else:  # it travels inside the workdir
        shutil.copytree(sm.adapter, workdir / "inputs" / "adapter")
    envs = _envs(cfg, sm, eval_id, limit, max_new, manifest)
    if target.is_local:
        rc = run_task(target.config, envs, secrets, workdir, sink, on_start)
        _take(workdir / "outputs", out)
        return rc
    cluster = ids.cluster_name(eval_id)
    try:
        task = skyr.build_task(target.path, envs, secrets, workdir, gpu=gpu)
        job = skyr.launch(task, cluster, idle_minutes=AUTOSTOP_IDLE_MIN, keep=False, on_line=sink, follow=True)
        status = skyr.job_status(cluster, job)
        if via_store:
            open_from_config(cfg, bars=False).get_dir(manifest_names.outputs(eval_id), out)
        else:
            staging = out / ".remote"
            skyr.rsync_down(cluster, "~/sky_workdir/outputs", staging, exclude=("checkpoints",))
            _take(staging, out)
        return 0 if status == "SUCCEEDED" else 1
    finally:
        skyr.down(cluster)
        sink(f"cluster {cluster} torn down")


def _take(src: Path, out: Path) -> None:
    """metrics.json and humaneval.jsonl from a run's outputs/ into the evaluation's folder."""
    for name in ("metrics.json", "humaneval.jsonl"):
        if (src / name).is_file():
            os.replace(src / name, out / name)
    if src.name == ".remote":
        shutil.rmtree(src, ignore_errors=True)
