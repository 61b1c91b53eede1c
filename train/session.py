"""The run around the training loop that sft.py and dpo.py share.

`Session`: the run's output dir, log (train/reporter.py), accelerant choice, resume point, common
TrainingArguments, and the end of a run (adapter, metrics.json, AMIGO_DONE line, exit code).

Exit codes: train/schema.py (EXIT_OK, EXIT_BAD_INPUT, EXIT_BUDGET).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from train.callbacks import BudgetCallback, MirrorCallback, ProgressCallback
from train.mirror import Mirror, complete_checkpoints, open_env_store, store_checkpoints
from train.reporter import Reporter, rank, write_json_atomic
from train.schema import EXIT_BUDGET, EXIT_OK

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
        self.progress = ProgressCallback(self.reporter, cfg.stage)
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
            store = self.mirror.store if self.mirror else open_env_store()
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
