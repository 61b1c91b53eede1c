"""The TrainerCallbacks that sft.py and dpo.py share.

- `ProgressCallback`: one `AMIGO_PROGRESS {...}` line per logging step (stdout + train.log),
  step times, tokens, losses, and a probe that proves gradient checkpointing recomputes.
- `BudgetCallback`: --max-runtime-s stops at the next step boundary with a checkpoint (exit 3).
- `MirrorCallback`: hands each saved checkpoint to the `Mirror` (train/mirror.py).

Each callback gets what it needs (a reporter, the stage number, a mirror) and nothing else.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING

from transformers import TrainerCallback

if TYPE_CHECKING:
    from train.mirror import Mirror
    from train.reporter import Reporter

# --- callbacks ----------------------------------------------------------------------------------


def _inside_first_layer(model):
    """A module inside the first decoder layer. transformers 5 checkpoints the layer's `forward`,
    not its `__call__`, so the layer's own hooks run once; its children's hooks run again on recompute."""
    for m in model.modules():
        if type(m).__name__.endswith("DecoderLayer"):
            return getattr(m, "input_layernorm", None) or next(m.children(), None)
    return None


class ProgressCallback(TrainerCallback):
    def __init__(self, reporter: Reporter, stage: int):
        self.reporter, self.stage = reporter, stage
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
        self.reporter.event("AMIGO_PROGRESS", {
            "stage": self.stage, "step": state.global_step, "total": state.max_steps,
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
