"""The run around the training loop that sft.py and dpo.py share.

`Session`: the run's output dir, log (train/reporter.py), accelerant choice, stop signals, resume
point, common TrainingArguments, and the end of a run (adapter, metrics.json, AMIGO_DONE, exit code).

Exit codes: train/schema.py (EXIT_OK, EXIT_BAD_INPUT, EXIT_BUDGET, EXIT_STOPPED).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

from train.callbacks import BestCallback, MirrorCallback, ProgressCallback, StopCallback
from train.mirror import Mirror, complete_checkpoints, open_env_store, store_checkpoints
from train.reporter import Reporter, rank, write_json_atomic
from train.schema import EXIT_BUDGET, EXIT_OK, EXIT_STOPPED

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


class Session:
    """One stage run: `python -m train` builds it, sft.py / dpo.py use it around their trainer."""

    def __init__(self, cfg, template_note: str | None = None, meta: dict | None = None):
        from train import accel

        self.t0 = time.monotonic()
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.ckpt_dir = self.out / "checkpoints"
        self.reporter = Reporter(self.out)
        self.choice = accel.choose(cfg, cfg.spec.trainer)
        self.run_id = os.environ.get("AMIGO_RUN_ID") or "manual"
        self.template_note, self.meta = template_note, meta
        self.split: dict = {}
        self.trainer_rows: dict = {}
        uri = os.environ.get("AMIGO_STORE_URI", "")
        self.mirror = (
            Mirror(uri, os.environ.get("AMIGO_STORE_ENDPOINT"), self.run_id, self.out, self.reporter)
            if uri and rank() == 0 else None
        )
        self.progress = ProgressCallback(self.reporter, cfg.stage)
        self.stop = StopCallback(cfg.max_runtime_s, self.t0, cfg.save_minutes, self.reporter)
        self.best = BestCallback(self.out / "best" if cfg.keep == "best" else None, rank() == 0, self.reporter)
        self.resumed_from: str | None = None
        self.oom_backoff: list[dict] = []  # each halving of the micro-batch after an OOM (train())
        self.batch: tuple[int, int] | None = None  # (micro-batch, grad-accum) that ran, set by finish()
        self._handlers: dict = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._handlers[sig] = signal.signal(sig, self.stop.request_stop)
        if cfg.report_to == "tensorboard":
            os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(self.out / "tb"))
        self.reporter.line(
            f"amigo train: stage {cfg.stage} ({cfg.spec.name}, {cfg.spec.trainer}) method={cfg.method} "
            f"model={cfg.model} adapter_from={cfg.adapter_from or '-'} | {accel.describe(self.choice)}"
        )
        if template_note:
            self.reporter.line(f"amigo train: chat template: the fallback (train/template.py): {template_note}")

    def restore_signals(self) -> None:
        """The handlers from before the session (the Session is also used in-process: tests, bench)."""
        for sig, handler in self._handlers.items():
            signal.signal(sig, handler)
        self._handlers = {}

    def held_out(self, dataset):
        """The stage's rows -> (train, eval or None), by content hash (train/heldout.py); logged."""
        from train.heldout import split

        train, evalset, self.split = split(dataset, self.cfg.eval_fraction, self.cfg.eval_max_rows)
        self.reporter.line(
            f"amigo train: {len(dataset)} rows from {self.cfg.data}: {self.split['train_rows']} training, "
            f"{self.split['eval_rows']} held out for validation (eval_fraction {self.cfg.eval_fraction}, at most {self.cfg.eval_max_rows})"
        )
        return train, evalset

    def callbacks(self) -> list:
        cbs = [self.progress, self.stop, self.best]
        if self.mirror:
            cbs.append(MirrorCallback(self.mirror, self.ckpt_dir))
        return cbs

    def training_kwargs(self, evaluate: bool = False) -> dict:
        """TrainingArguments shared by SFTConfig and DPOConfig."""
        c, ch = self.cfg, self.choice
        return dict(
            output_dir=str(self.ckpt_dir),  # checkpoints/checkpoint-<step>/
            per_device_train_batch_size=c.per_device_train_batch_size,
            per_device_eval_batch_size=c.per_device_train_batch_size,
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
            activation_checkpointing=c.gradient_checkpointing,
            activation_checkpointing_kwargs={"use_reentrant": False},
            bf16=ch["bf16"],
            fp16=ch.get("fp16", False),  # with a GradScaler: fp16 gradients underflow without loss scaling
            optim=ch["optim"],
            use_liger_kernel=ch["liger"],
            logging_steps=c.logging_steps,
            logging_first_step=True,
            save_strategy="steps",
            save_steps=c.save_steps,
            save_total_limit=c.save_total_limit,
            # eval loss every eval_steps and at the last step (the Trainer adds that one); best/ keeps the best
            eval_strategy="steps" if evaluate else "no",
            eval_steps=c.eval_steps,
            prediction_loss_only=True,  # the loss only: no logits gathered across the eval set
            report_to=[] if c.report_to == "none" else [c.report_to],
            include_num_input_tokens_seen="non_padding",
            seed=c.seed,
            disable_tqdm=True,  # AMIGO_PROGRESS lines instead
            ddp_find_unused_parameters=False,
            use_cpu=ch["device"] == "cpu",
        )

    def prepared(self, trainer, rows_in: int, evalset) -> None:
        """Log what the trainer kept of the rows: TRL drops a row whose prompt alone fills max_length."""
        kept = len(trainer.train_dataset)
        if self.choice.get("packing") and self.cfg.spec.trainer == "sft":  # rows are packed: count sequences
            self.trainer_rows = {"train_rows_in": rows_in, "packed_sequences": kept}
            return
        self.trainer_rows = {"train_rows_in": rows_in, "train_rows_kept": kept}
        if kept < rows_in:
            self.reporter.line(f"amigo train: {rows_in - kept} of {rows_in} training rows dropped by the trainer: "
                               f"no answer token within max_length={self.cfg.max_length}")
        if evalset is not None and trainer.eval_dataset is not None:
            self.trainer_rows["eval_rows_kept"] = len(trainer.eval_dataset)
            if len(trainer.eval_dataset) == 0:
                from transformers.trainer_utils import IntervalStrategy

                trainer.args.eval_strategy = IntervalStrategy.NO  # nothing left to evaluate
                self.reporter.line("amigo train: no held-out row fits max_length: validation is off for this run")

    def resume_checkpoint(self) -> str | None:
        """--resume auto: newest complete local checkpoint, else the newest one in the store. When the
        controller resumes a run (AMIGO_RESUME_STEP: the step of the checkpoint it sent or mirrored),
        finding none is an error, never a silent start at step 0."""
        c = self.cfg
        if c.resume == "never":
            return None
        if c.resume != "auto":
            self.resumed_from = c.resume
            return c.resume
        found = self._auto_checkpoint()
        expected = int(os.environ.get("AMIGO_RESUME_STEP") or 0)
        if found is None and expected > 0 and int(os.environ.get("LOCAL_RANK", "0")) == 0:
            from train.schema import TrainInputError

            raise TrainInputError(f"resuming from checkpoint-{expected}, but no checkpoint reached this machine "
                                  f"({self.ckpt_dir} is empty and the store has none): not starting over at step 0")
        return found

    def _auto_checkpoint(self) -> str | None:
        local = complete_checkpoints(self.ckpt_dir)
        if local:
            self.resumed_from = str(local[-1][1])
            self.reporter.line(f"amigo train: resuming from {self.resumed_from}")
            return self.resumed_from
        if os.environ.get("AMIGO_STORE_URI") and int(os.environ.get("LOCAL_RANK", "0")) == 0:
            store = self.mirror.store if self.mirror else open_env_store()
            remote = store_checkpoints(store, self.run_id)
            if remote:
                step, name = remote[-1]
                dest = self.ckpt_dir / f"checkpoint-{step}"
                store.get_dir(name, str(dest))
                self.resumed_from = f"store:{name}"
                self.reporter.line(f"amigo train: resuming from {name} (fetched from the store)")
                self._fetch_best(store)
                return str(dest)
        return None

    def train(self, trainer, resume: str | None):
        """trainer.train(), surviving an out-of-memory error in the first steps (before this attempt's first
        checkpoint): the micro-batch halves and gradient accumulation doubles -- the same sequences per
        optimizer step, so the same number of steps and the same learning-rate schedule -- and training
        starts again from where it started (the adapter put back, the optimizer and scheduler new).
        One process only: under DDP one rank's OOM leaves the others waiting in a collective."""
        import torch

        model = trainer.model
        start = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}
        fault = int(os.environ.get("AMIGO_FAULT_OOM_ABOVE", "0") or 0)
        hook = None
        if fault:
            from train.callbacks import inject_oom_above

            hook = inject_oom_above(model, fault)
        try:
            while True:
                try:
                    return trainer.train(resume_from_checkpoint=resume)
                except torch.OutOfMemoryError as e:
                    if not self._can_back_off(trainer):
                        raise
                    event = self._back_off(trainer, str(e).splitlines()[0][:200])
                self._restart(trainer, model, start)
                self.reporter.line(
                    f"amigo train: out of memory at micro-batch {event['from'][0]} (step {event['step']}): micro-batch "
                    f"{event['to'][0]} x grad-accum {event['to'][1]} instead of {event['from'][0]} x "
                    f"{event['from'][1]}, the same {event['sequences']} sequences per step and schedule; starting again")
        finally:
            if hook is not None:
                hook.remove()

    def _can_back_off(self, trainer) -> bool:
        import torch.distributed as dist

        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        return trainer.args.per_device_train_batch_size > 1 and world == 1 and not self.progress.saved

    def _back_off(self, trainer, error: str) -> dict:
        a = trainer.args
        before = [a.per_device_train_batch_size, a.gradient_accumulation_steps]
        a.per_device_train_batch_size //= 2
        a.gradient_accumulation_steps *= 2
        a.per_device_eval_batch_size = min(a.per_device_eval_batch_size, a.per_device_train_batch_size)
        trainer._train_batch_size = a.train_batch_size  # what the Trainer sizes its dataloader from
        event = {"step": trainer.state.global_step, "from": before,
                 "to": [a.per_device_train_batch_size, a.gradient_accumulation_steps],
                 "sequences": before[0] * before[1], "error": error}
        self.oom_backoff.append(event)
        return event

    @staticmethod
    def _restart(trainer, model, start: dict) -> None:
        """Free what the failed attempt held and put the adapter back as it was before training."""
        import gc

        import torch

        trainer.optimizer, trainer.lr_scheduler = None, None
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in start:
                    p.copy_(start[n].to(p.device))
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()  # the peak metrics.json reports is the batch that ran

    def _fetch_best(self, store) -> None:
        """best/ of the earlier attempt, from its mirrored outputs (a new machine has no local copy)."""
        from train.storage import names

        if self.cfg.keep != "best" or (self.out / "best" / "best.json").is_file():
            return
        tmp = self.out / ".outputs-earlier"
        try:
            store.get_dir(names.outputs(self.run_id), str(tmp))
            if (tmp / "best" / "best.json").is_file():
                os.replace(tmp / "best", self.out / "best")
        except Exception as e:  # noqa: BLE001 - without it the best is chosen among this attempt's evals
            self.reporter.line(f"amigo train: no earlier best adapter in the store ({e.__class__.__name__})")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def finish(self, trainer, tokenizer) -> int:
        """Adapter + metrics.json + AMIGO_DONE; exit 0 (completed), 3 (budget) or 4 (stop signal)."""
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
        self.batch = (trainer.args.per_device_train_batch_size, trainer.args.gradient_accumulation_steps)
        stopped = self.stop.stopped
        reason = {"budget": "budget", "signal": "preempted" if os.environ.get("AMIGO_SPOT") == "1" else "stopped",
                  None: "completed"}[stopped]
        if rank() == 0:
            kept = self._save_adapter(model, tokenizer, state.global_step)
            if stopped is None:
                shutil.rmtree(self.out / "best", ignore_errors=True)  # in adapter/ now; kept only to resume
            metrics = self.metrics(state, world, digests, reason, torch)
            metrics["kept"] = kept
            write_json_atomic(self.out / "metrics.json", metrics)
            if self.mirror:
                self.mirror.outputs()
                self.mirror.close()
                metrics["mirror"] = {"uploaded": len(self.mirror.uploaded), "failed": self.mirror.failed}
                write_json_atomic(self.out / "metrics.json", metrics)
            self.reporter.event("AMIGO_DONE", metrics)
        if world > 1:
            dist.barrier()
        self.restore_signals()
        return {"budget": EXIT_BUDGET, "signal": EXIT_STOPPED, None: EXIT_OK}[stopped]

    def _save_adapter(self, model, tokenizer, step: int) -> dict:
        """adapter/: the best evaluated adapter (keep=best) or the final weights, the tokenizer (with the
        chat template trained on) and amigo_adapter.json; swapped in whole."""
        from train.preflight import META

        adapter, tmp = self.out / "adapter", self.out / ".adapter.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        best = self.best.best
        if self.cfg.keep == "best" and best is not None and (self.out / "best" / "best.json").is_file():
            tmp.mkdir(parents=True)
            for name in ADAPTER_FILES:
                shutil.copy2(self.out / "best" / name, tmp / name)
            kept = {"which": "best", "step": best[0], "eval_loss": round(best[1], 4)}
        else:
            model.save_pretrained(str(tmp), selected_adapters=["default"])  # not DPO's frozen "ref" copy
            kept = {"which": "last", "step": step, "eval_loss": None}
        tokenizer.save_pretrained(str(tmp))
        if self.meta is not None:
            (tmp / META).write_text(json.dumps(self.meta, indent=2) + "\n", encoding="utf-8")
        shutil.rmtree(adapter, ignore_errors=True)
        os.replace(tmp, adapter)
        self.reporter.line(f"amigo train: adapter/ is the {kept['which']} adapter"
                           + (f" (step {kept['step']}, eval loss {kept['eval_loss']})" if kept["which"] == "best" else ""))
        return kept

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
            # what ran: an OOM back-off (train()) halved the micro-batch and doubled accumulation
            "per_device_train_batch_size": self.batch[0] if self.batch else c.per_device_train_batch_size,
            "gradient_accumulation_steps": self.batch[1] if self.batch else c.gradient_accumulation_steps,
            "oom_backoff": self.oom_backoff,
            **self.progress.summary(state),
            "eval_loss": self.best.summary(),
            "eval_rows": self.split.get("eval_rows", 0), "train_rows": self.split.get("train_rows"),
            **self.trainer_rows,
            "chat_template": f"fallback: {self.template_note}" if self.template_note else "base",
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
            "stop_signal": self.stop.signal,
        }
        return m
