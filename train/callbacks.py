"""Everything around the training loop that sft.py and dpo.py share.

- `Session`: the run's output dir, log, accelerant choice, resume point, common TrainingArguments,
  and the end of a run (adapter, metrics.json, AMIGO_DONE line, exit code).
- `ProgressCallback`: one `AMIGO_PROGRESS {...}` line per logging step (stdout + train.log),
  step times, tokens, losses, and a probe that proves gradient checkpointing recomputes.
- `BudgetCallback`: --max-runtime-s stops at the next step boundary with a checkpoint (exit 3).
- `Mirror`: background uploads of checkpoints and outputs to AMIGO_STORE_URI, with retries.

Exit codes (docs/architecture.md): 0 done · 2 bad input · 3 stopped by --max-runtime-s.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

from transformers import TrainerCallback

EXIT_OK, EXIT_BAD_INPUT, EXIT_BUDGET = 0, 2, 3
CKPT_RE = re.compile(r"checkpoint-(\d+)$")


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class Reporter:
    """Lines for humans and for the controller: stdout and train.log, rank 0 only."""

    def __init__(self, out_dir: Path):
        self.enabled = rank() == 0
        self.log = out_dir / "train.log"

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        print(text, flush=True)
        with self.log.open("a", encoding="utf-8") as f:
            f.write(text + "\n")

    def event(self, tag: str, data: dict) -> None:
        self.line(f"{tag} {json.dumps(data, default=str)}")


# --- checkpoints: local first, then the store ---------------------------------------------------


def complete_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """checkpoint-<step> dirs that finished saving. The Trainer writes trainer_state.json last
    (after weights, optimizer, scheduler, RNG), so a dir without it was cut off mid-save."""
    if not ckpt_dir.is_dir():
        return []
    found = []
    for d in ckpt_dir.iterdir():
        m = CKPT_RE.search(d.name)
        if m and d.is_dir() and (d / "trainer_state.json").is_file():
            found.append((int(m.group(1)), d))
    return sorted(found)


def store_checkpoints(store, run_id: str) -> list[tuple[int, str]]:
    names = store.list_manifests(f"runs/{run_id}/checkpoints/")
    found = []
    for name in names:
        m = CKPT_RE.search(name.removesuffix(".json"))
        if m:
            found.append((int(m.group(1)), name.removesuffix(".json")))
    return sorted(found)


# --- store mirroring ----------------------------------------------------------------------------


def _snapshot(src: Path, dst: Path) -> Path:
    """Hard-link copy: immune to the Trainer rotating (deleting) the checkpoint mid-upload, no bytes copied."""
    if dst.exists():
        shutil.rmtree(dst)

    def link(s, d):
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=link)
    return dst


class Mirror:
    """Uploads queued dirs to the store in a background thread; each put retried with backoff
    (1, 2, 4, 8, 16 s: ~31 s of store outage tolerated per upload)."""

    def __init__(self, uri: str, endpoint: str | None, run_id: str, out_dir: Path, reporter: Reporter,
                 tries: int = 6):
        from train.storage import open_store  # only when mirroring is on: boto3 stays optional

        self.store = open_store(uri, endpoint=endpoint or None)
        self.run_id, self.out_dir, self.reporter, self.tries = run_id, out_dir, reporter, tries
        self.staging = out_dir / ".mirror"
        self.q: queue.Queue = queue.Queue()
        self.uploaded: list[str] = []
        self.failed: list[str] = []
        self.thread = threading.Thread(target=self._work, name="amigo-mirror", daemon=True)
        self.thread.start()

    def checkpoint(self, ckpt: Path) -> None:
        name = f"runs/{self.run_id}/checkpoints/{ckpt.name}"
        self.q.put((_snapshot(ckpt, self.staging / ckpt.name), name))

    def outputs(self) -> None:
        """adapter/, metrics.json, train.log, tb/ as the run's `outputs` manifest (checkpoints excluded)."""
        snap = self.staging / f"outputs-{time.monotonic_ns()}"
        snap.mkdir(parents=True)
        for item in ("adapter", "metrics.json", "train.log", "tb"):
            src = self.out_dir / item
            if src.is_dir():
                _snapshot(src, snap / item)
            elif src.is_file():
                shutil.copy2(src, snap / item)  # still being appended to: copy, not link
        self.q.put((snap, f"runs/{self.run_id}/outputs"))

    def _work(self) -> None:
        while (item := self.q.get()) is not None:
            snap, name = item
            for attempt in range(self.tries):
                try:
                    self.store.put_dir(str(snap), name)
                    self.uploaded.append(name)
                    break
                except Exception as e:  # StoreError, network errors: retry, never kill training
                    wait = 2.0**attempt
                    print(f"mirror: {name}: {e} (try {attempt + 1}/{self.tries})", file=sys.stderr, flush=True)
                    if attempt + 1 < self.tries:
                        time.sleep(wait)
            else:
                self.failed.append(name)
            shutil.rmtree(snap, ignore_errors=True)

    def close(self, timeout: float = 600.0) -> None:
        self.q.put(None)
        self.thread.join(timeout)
        shutil.rmtree(self.staging, ignore_errors=True)


# --- callbacks ----------------------------------------------------------------------------------


def _inside_first_layer(model):
    """A module inside the first decoder layer. transformers 5 checkpoints the layer's `forward`,
    not its `__call__`, so the layer's own hooks run once; its children's hooks run again on recompute."""
    for m in model.modules():
        if type(m).__name__.endswith("DecoderLayer"):
            return getattr(m, "input_layernorm", None) or next(m.children(), None)
    return None


class ProgressCallback(TrainerCallback):
    def __init__(self, session: Session):
        self.s = session
        self.step_times: list[float] = []
        self.first_loss = self.last_loss = None
        self.calls = {"embed": 0, "layer": 0}
        self._hooks: list = []

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.t_begin = self._t_log = time.perf_counter()
        self.tokens_begin = self._tokens_log = state.num_input_tokens_seen
        self.step_begin = state.global_step
        # Recompute probe: with checkpointing, the decoder layers run again in backward while the
        # embedding (outside the checkpointed blocks) does not: layer calls > embedding calls.
        layer = _inside_first_layer(model) if model is not None else None
        if layer is not None and model.get_input_embeddings() is not None:
            self._hooks = [
                model.get_input_embeddings().register_forward_pre_hook(lambda *a: self._count("embed")),
                layer.register_forward_pre_hook(lambda *a: self._count("layer")),
            ]

    def _count(self, key: str) -> None:
        self.calls[key] += 1

    def on_step_begin(self, args, state, control, **kw):
        self._t_step = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.step_times.append(time.perf_counter() - self._t_step)
        if len(self.step_times) == 1:
            for h in self._hooks:  # one step is proof enough; don't tax the rest
                h.remove()

    def on_log(self, args, state, control, logs=None, **kw):
        logs = logs or {}
        if "loss" not in logs:
            return
        loss = float(logs["loss"])
        self.first_loss = loss if self.first_loss is None else self.first_loss
        self.last_loss = loss
        now, tokens = time.perf_counter(), state.num_input_tokens_seen
        tps = (tokens - self._tokens_log) / max(now - self._t_log, 1e-9)
        self._t_log, self._tokens_log = now, tokens
        recent = self.step_times[-20:] or [0.0]
        eta = (state.max_steps - state.global_step) * statistics.median(recent)
        self.s.reporter.event("AMIGO_PROGRESS", {
            "stage": self.s.cfg.stage, "step": state.global_step, "total": state.max_steps,
            "loss": round(loss, 4), "tokens_per_s": round(tps, 1), "eta_s": round(eta, 1),
        })

    def summary(self, state) -> dict:
        wall = time.perf_counter() - self.t_begin
        tokens = state.num_input_tokens_seen - self.tokens_begin
        return {
            "steps_this_run": state.global_step - self.step_begin,
            "tokens_seen": state.num_input_tokens_seen,
            "tokens_per_s": round(tokens / wall, 1) if wall > 0 else None,
            "median_step_s": round(statistics.median(self.step_times), 4) if self.step_times else None,
            "first_loss": self.first_loss,
            "last_loss": self.last_loss,
            "train_s": round(wall, 2),
            "gc_recompute_observed": self.calls["layer"] > self.calls["embed"] > 0 if self._hooks else None,
        }


class BudgetCallback(TrainerCallback):
    """--max-runtime-s: at the first step boundary past the budget, save a checkpoint and stop.
    Under DDP every rank must stop at the same step, so the decision is all-reduced (MAX)."""

    def __init__(self, max_runtime_s: float, t0: float):
        self.max_runtime_s, self.t0 = max_runtime_s, t0
        self.stopped = False
        # Fault injection for tests (issue 7): seconds to sleep after every step.
        self.delay = float(os.environ.get("AMIGO_FAULT_STEP_DELAY_S", "0") or 0)

    def on_step_end(self, args, state, control, **kw):
        if self.delay:
            time.sleep(self.delay)
        if self.max_runtime_s <= 0:
            return
        over = time.monotonic() - self.t0 >= self.max_runtime_s
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            import torch

            dev = "cuda" if dist.get_backend() == "nccl" else "cpu"
            flag = torch.tensor([1.0 if over else 0.0], device=dev)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            over = bool(flag.item())
        if over and state.global_step < state.max_steps:
            self.stopped = True
            control.should_save = True
            control.should_training_stop = True


class MirrorCallback(TrainerCallback):
    def __init__(self, mirror: Mirror, ckpt_dir: Path):
        self.mirror, self.ckpt_dir = mirror, ckpt_dir

    def on_save(self, args, state, control, **kw):
        if state.is_world_process_zero:
            ckpt = self.ckpt_dir / f"checkpoint-{state.global_step}"
            if (ckpt / "trainer_state.json").is_file():
                self.mirror.checkpoint(ckpt)
                self.mirror.outputs()  # train.log so far: a preempted run's log survives too


def quiet(trainer):
    """Drop the Trainer's own dict printer: AMIGO_PROGRESS lines carry the same numbers, parseably."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


# --- the session --------------------------------------------------------------------------------


class Session:
    """One stage run: `python -m train` builds it, sft.py / dpo.py use it around their trainer."""

    def __init__(self, cfg):
        from train import accel

        self.t0 = time.monotonic()
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.ckpt_dir = self.out / "checkpoints"
        self.reporter = Reporter(self.out)
        self.choice = accel.choose(cfg, cfg.spec.trainer)
        self.run_id = os.environ.get("AMIGO_RUN_ID") or "manual"
        uri = os.environ.get("AMIGO_STORE_URI", "")
        self.mirror = (
            Mirror(uri, os.environ.get("AMIGO_STORE_ENDPOINT"), self.run_id, self.out, self.reporter)
            if uri and rank() == 0 else None
        )
        self.progress = ProgressCallback(self)
        self.budget = BudgetCallback(cfg.max_runtime_s, self.t0)
        self.resumed_from: str | None = None
        if cfg.report_to == "tensorboard":
            os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(self.out / "tb"))
        self.reporter.line(
            f"amigo train: stage {cfg.stage} ({cfg.spec.name}, {cfg.spec.trainer}) method={cfg.method} "
            f"model={cfg.model} adapter_from={cfg.adapter_from or '-'} | {accel.describe(self.choice)}"
        )

    def callbacks(self) -> list:
        cbs = [self.progress, self.budget]
        if self.mirror:
            cbs.append(MirrorCallback(self.mirror, self.ckpt_dir))
        return cbs

    def training_kwargs(self) -> dict:
        """TrainingArguments shared by SFTConfig and DPOConfig."""
        c, ch = self.cfg, self.choice
        return dict(
            output_dir=str(self.ckpt_dir),  # checkpoints/checkpoint-<step>/
            per_device_train_batch_size=c.per_device_train_batch_size,
            gradient_accumulation_steps=c.gradient_accumulation_steps,
            learning_rate=c.learning_rate,
            lr_scheduler_type=c.lr_scheduler_type,
            warmup_steps=c.warmup_steps,
            weight_decay=c.weight_decay,
            max_grad_norm=c.max_grad_norm,
            num_train_epochs=c.num_train_epochs,
            max_steps=c.max_steps,
            max_length=c.max_length,
            truncation_mode=c.truncation_mode,
            gradient_checkpointing=c.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
            bf16=ch["bf16"],
            optim=ch["optim"],
            use_liger_kernel=ch["liger"],
            logging_steps=c.logging_steps,
            logging_first_step=True,
            save_strategy="steps",
            save_steps=c.save_steps,
            save_total_limit=c.save_total_limit,
            report_to=[] if c.report_to == "none" else [c.report_to],
            include_num_input_tokens_seen="non_padding",
            seed=c.seed,
            disable_tqdm=True,  # AMIGO_PROGRESS lines instead
            ddp_find_unused_parameters=False,
            use_cpu=ch["device"] == "cpu",
        )

    def resume_checkpoint(self) -> str | None:
        """--resume auto: newest complete local checkpoint, else the newest one in the store."""
        c = self.cfg
        if c.resume == "never":
            return None
        if c.resume != "auto":
            self.resumed_from = c.resume
            return c.resume
        local = complete_checkpoints(self.ckpt_dir)
        if local:
            self.resumed_from = str(local[-1][1])
            self.reporter.line(f"amigo train: resuming from {self.resumed_from}")
            return self.resumed_from
        if os.environ.get("AMIGO_STORE_URI") and int(os.environ.get("LOCAL_RANK", "0")) == 0:
            store = self.mirror.store if self.mirror else _open_store()
            remote = store_checkpoints(store, self.run_id)
            if remote:
                step, name = remote[-1]
                dest = self.ckpt_dir / f"checkpoint-{step}"
                store.get_dir(name, str(dest))
                self.resumed_from = f"store:{name}"
                self.reporter.line(f"amigo train: resuming from {name} (fetched from the store)")
                return str(dest)
        return None

    def finish(self, trainer, tokenizer) -> int:
        """Adapter + metrics.json + AMIGO_DONE; exit 0 (completed) or 3 (budget)."""
        import torch

        from train.model import trainable_digest

        state = trainer.state
        model = trainer.accelerator.unwrap_model(trainer.model)
        digests = [trainable_digest(model)]
        import torch.distributed as dist

        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if world > 1:
            gathered: list = [None] * world
            dist.all_gather_object(gathered, digests[0])
            digests = gathered
        budget = self.budget.stopped
        if rank() == 0:
            adapter = self.out / "adapter"
            tmp = self.out / ".adapter.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            model.save_pretrained(str(tmp), selected_adapters=["default"])  # not DPO's frozen "ref" copy
            tokenizer.save_pretrained(str(tmp))
            shutil.rmtree(adapter, ignore_errors=True)
            os.replace(tmp, adapter)
            metrics = self.metrics(state, world, digests, "budget" if budget else "completed", torch)
            write_json_atomic(self.out / "metrics.json", metrics)
            if self.mirror:
                self.mirror.outputs()
                self.mirror.close()
                metrics["mirror"] = {"uploaded": len(self.mirror.uploaded), "failed": self.mirror.failed}
                write_json_atomic(self.out / "metrics.json", metrics)
            self.reporter.event("AMIGO_DONE", metrics)
        if world > 1:
            dist.barrier()
        return EXIT_BUDGET if budget else EXIT_OK

    def metrics(self, state, world: int, digests: list[str], exit_reason: str, torch) -> dict:
        import resource

        import peft
        import transformers
        import trl

        c, cuda = self.cfg, torch.cuda.is_available()
        gib = 2**30
        m = {
            "stage": c.stage, "stage_name": c.spec.name, "trainer": c.spec.trainer, "method": c.method,
            "base_model": c.model, "adapter_from": c.adapter_from or None, "data": c.data,
            "device": self.choice["device"],
            "gpu_name": torch.cuda.get_device_name() if cuda else None,
            "gpu_mem_gib": round(torch.cuda.get_device_properties(0).total_memory / gib, 2) if cuda else None,
            "world_size": world, "steps": state.global_step, "total_steps": state.max_steps,
            **self.progress.summary(state),
            "peak_mem_allocated_gib": round(torch.cuda.max_memory_allocated() / gib, 3) if cuda else None,
            "peak_mem_reserved_gib": round(torch.cuda.max_memory_reserved() / gib, 3) if cuda else None,
            # ru_maxrss is KiB on Linux
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
            "wall_s": round(time.monotonic() - self.t0, 2),
            "accelerants": {k: v for k, v in self.choice.items()},
            "gradient_checkpointing": c.gradient_checkpointing,
            "resumed_from": self.resumed_from,
            "rank_digests": digests, "ranks_agree": len(set(digests)) == 1,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "peft": peft.__version__, "trl": trl.__version__},
            "exit_reason": exit_reason,
        }
        return m


def _open_store():
    from train.storage import open_store

    return open_store(os.environ["AMIGO_STORE_URI"], endpoint=os.environ.get("AMIGO_STORE_ENDPOINT") or None)
