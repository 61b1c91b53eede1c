"""The TrainerCallbacks that sft.py and dpo.py share.

- `ProgressCallback`: one `AMIGO_PROGRESS {...}` line per logging step and per evaluation (stdout +
  train.log), step times, tokens, losses, and a probe that proves gradient checkpointing recomputes.
- `StopCallback`: at the next step boundary after --max-runtime-s (exit 3) or a SIGTERM/SIGINT (exit 4),
  save a checkpoint and stop; and a checkpoint every `save_minutes` of training.
- `BestCallback`: eval losses (first/best/final) and a copy of the best adapter in best/.
- `MirrorCallback`: hands each saved checkpoint to the `Mirror` (train/mirror.py).
- `inject_oom_above`: fault injection for tests (AMIGO_FAULT_OOM_ABOVE=K): an out-of-memory error from any
  training forward pass of more than K sequences, where a CPU cannot run out of CUDA memory.

Each callback gets what it needs (a reporter, the stage number, a mirror) and nothing else.
"""

from __future__ import annotations

import os
import shutil
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
        self.first_loss = self.last_loss = self.eval_loss = None
        self.last_tps = 0.0
        self.calls = {"embed": 0, "layer": 0}
        self._hooks: list = []

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.step_times = []  # a new attempt (an OOM back-off starts training again): its own steps
        self.saved = False
        self.t_begin = self._t_log = time.perf_counter()
        self.tokens_begin = self._tokens_log = state.num_input_tokens_seen
        self.step_begin = state.global_step
        # Recompute probe: with checkpointing, the decoder layers run again in backward while the
        # embedding (outside the checkpointed blocks) does not: layer calls > embedding calls.
        for h in self._hooks:  # an earlier attempt's (Session.train starts again after an OOM)
            h.remove()
        self.calls = {"embed": 0, "layer": 0}
        layer = _inside_first_layer(model) if model is not None else None
        if layer is not None and model.get_input_embeddings() is not None:
            self._hooks = [
                model.get_input_embeddings().register_forward_pre_hook(lambda *a: self._count("embed")),
                layer.register_forward_pre_hook(lambda *a: self._count("layer")),
            ]

    def _count(self, key: str) -> None:
        self.calls[key] += 1

    def on_save(self, args, state, control, **kw):
        self.saved = True  # past the first checkpoint, an OOM is no longer "in the first steps" (Session.train)

    def on_step_begin(self, args, state, control, **kw):
        self._t_step = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.step_times.append(time.perf_counter() - self._t_step)
        if len(self.step_times) == 1:
            for h in self._hooks:  # one step is proof enough; don't tax the rest
                h.remove()

    def on_log(self, args, state, control, logs=None, **kw):
        logs = logs or {}
        if "eval_loss" in logs:  # its own line: the last evaluation comes after the last training log
            self.eval_loss = round(float(logs["eval_loss"]), 4)
            self.reporter.event("AMIGO_PROGRESS", {
                "stage": self.stage, "step": state.global_step, "total": state.max_steps,
                "loss": round(self.last_loss, 4) if self.last_loss is not None else None,
                "tokens_per_s": self.last_tps, "eta_s": None, "eval_loss": self.eval_loss,
            })
            return
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
        self.last_tps = round(tps, 1)
        line = {"stage": self.stage, "step": state.global_step, "total": state.max_steps,
                "loss": round(loss, 4), "tokens_per_s": self.last_tps, "eta_s": round(eta, 1)}
        self.reporter.event("AMIGO_PROGRESS", line)

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


class StopCallback(TrainerCallback):
    """Stop at the next step boundary with a checkpoint, for one of two reasons:

    - the budget: --max-runtime-s passed (exit 3);
    - a stop signal: SIGTERM (spot preemption, `amigo-burst down`, a stopped worker) or SIGINT (exit 4).
      The handler only sets a flag; the step in flight finishes, the Trainer saves checkpoint-<step>
      (mirrored like any checkpoint), and `--resume auto` continues from it.

    And every `save_minutes` of training a checkpoint, so a hard kill (no SIGTERM) loses at most that.
    Under DDP every rank must take the same decision at the same step: one all-reduce (MAX) per step.
    """

    def __init__(self, max_runtime_s: float, t0: float, save_minutes: float = 0.0, reporter: Reporter | None = None):
        self.max_runtime_s, self.t0, self.save_s = max_runtime_s, t0, save_minutes * 60
        self.reporter = reporter
        self.stopped: str | None = None  # "budget" | "signal"
        self.signal: str | None = None  # name of the stop signal received, e.g. "SIGTERM"
        self.last_save = time.monotonic()
        # Fault injection for tests (issue 7): seconds to sleep after every step.
        self.delay = float(os.environ.get("AMIGO_FAULT_STEP_DELAY_S", "0") or 0)

    def request_stop(self, signum: int, frame=None) -> None:
        """Signal handler: note it, and let a second signal of the same kind act as the default would."""
        import signal

        self.signal = signal.Signals(signum).name
        signal.signal(signum, signal.SIG_DFL)
        print(f"amigo train: {self.signal}: stopping at the end of this step with a checkpoint "
              f"(send it again to stop at once, without one)", flush=True)

    def on_train_begin(self, args, state, control, **kw):
        self.last_save = time.monotonic()

    def on_save(self, args, state, control, **kw):
        self.last_save = time.monotonic()

    def on_step_end(self, args, state, control, **kw):
        if self.delay:
            time.sleep(self.delay)
        now = time.monotonic()
        flags = [
            self.max_runtime_s > 0 and now - self.t0 >= self.max_runtime_s,
            self.signal is not None,
            self.save_s > 0 and now - self.last_save >= self.save_s,
        ]
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            import torch

            dev = "cuda" if dist.get_backend() == "nccl" else "cpu"
            t = torch.tensor([float(f) for f in flags], device=dev)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flags = [bool(x) for x in t.tolist()]
        over, signalled, save_due = flags
        if (over or signalled) and state.global_step < state.max_steps:
            self.stopped = "signal" if signalled else "budget"
            if self.reporter:
                why = (self.signal or "a stop signal") if signalled else f"--max-runtime-s {self.max_runtime_s:g}"
                self.reporter.line(f"amigo train: stopping after step {state.global_step} ({why}): "
                                   f"saving checkpoint-{state.global_step}")
            control.should_save = True
            control.should_training_stop = True
            control.should_evaluate = False  # time is short: the last evaluation stands
        elif save_due:
            control.should_save = True


class BestCallback(TrainerCallback):
    """Eval losses of the run and, with keep=best, a copy of the best adapter in `best_dir`.

    The copy is written from the model in memory when an evaluation beats the best so far (the
    adapter only: r=16 on a 12B base is ~100 MB), so checkpoint rotation (save_total_limit) can never
    delete it. best/best.json names its step and loss; a resumed run reads it back, and its earlier
    eval losses come back with the checkpoint's log_history.
    """

    def __init__(self, best_dir: Path | None, is_main: bool, reporter: Reporter | None = None):
        self.best_dir, self.is_main, self.reporter = best_dir, is_main, reporter
        self.history: list[tuple[int, float]] = []  # (step, eval_loss), this run and resumed ones
        self.best: tuple[int, float] | None = None  # of the adapter in best_dir

    def on_train_begin(self, args, state, control, **kw):
        import json

        self.history = [(e["step"], e["eval_loss"]) for e in state.log_history if "eval_loss" in e]
        mark = self.best_dir / "best.json" if self.best_dir else None
        if state.global_step == 0 and self.best_dir is not None and self.is_main:
            shutil.rmtree(self.best_dir, ignore_errors=True)  # a fresh run: an old best/ is not ours
        elif mark is not None and mark.is_file():
            b = json.loads(mark.read_text())
            self.best = (b["step"], b["eval_loss"])
            if self.reporter:
                self.reporter.line(f"amigo train: best adapter so far: step {b['step']}, eval loss {b['eval_loss']:.4f}")

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kw):
        loss = (metrics or {}).get("eval_loss")
        if loss is None:
            return
        self.history.append((state.global_step, float(loss)))
        if self.best_dir is None or (self.best is not None and loss >= self.best[1]):
            return
        self.best = (state.global_step, float(loss))
        if self.is_main and model is not None:
            import json

            tmp = self.best_dir.with_name(".best.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            model.save_pretrained(str(tmp), selected_adapters=["default"])  # not DPO's frozen "ref"
            (tmp / "best.json").write_text(json.dumps({"step": self.best[0], "eval_loss": self.best[1]}) + "\n")
            shutil.rmtree(self.best_dir, ignore_errors=True)
            os.replace(tmp, self.best_dir)

    def summary(self) -> dict:
        if not self.history:
            return {"first": None, "best": None, "best_step": None, "final": None}
        step, best = min(self.history, key=lambda sl: sl[1])
        return {"first": round(self.history[0][1], 4), "best": round(best, 4), "best_step": step,
                "final": round(self.history[-1][1], 4), "evaluations": len(self.history)}


class MirrorCallback(TrainerCallback):
    def __init__(self, mirror: Mirror, ckpt_dir: Path):
        self.mirror, self.ckpt_dir = mirror, ckpt_dir

    def on_save(self, args, state, control, **kw):
        if state.is_world_process_zero:
            ckpt = self.ckpt_dir / f"checkpoint-{state.global_step}"
            if (ckpt / "trainer_state.json").is_file():
                self.mirror.checkpoint(ckpt)
                self.mirror.outputs()  # train.log so far: a preempted run's log survives too


def inject_oom_above(model, k: int):
    """Tests only (AMIGO_FAULT_OOM_ABOVE): raise torch's out-of-memory error from a training forward pass of
    more than K sequences, as CUDA does when a micro-batch does not fit. Returns the hook's handle."""
    import torch

    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else (args[0] if args else None)
        if module.training and ids is not None and ids.shape[0] > k:
            raise torch.OutOfMemoryError(f"CUDA out of memory (injected: {ids.shape[0]} sequences > {k})")

    return model.register_forward_pre_hook(hook, with_kwargs=True)


def quiet(trainer):
    """Drop the Trainer's own dict printer: AMIGO_PROGRESS lines carry the same numbers, parseably."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer
