"""An out-of-memory error in the first steps: the trainer halves the micro-batch and doubles gradient
accumulation until the step fits, says so, records it in metrics.json, and trains the same number of
optimizer steps of the same sequences per step as planned.

The only fake: AMIGO_FAULT_OOM_ABOVE=K raises torch's out-of-memory error from any training forward pass of
more than K sequences (train/callbacks.py inject_oom_above) -- a CPU cannot run out of CUDA memory. The
training is real: the tiny model through TRL's SFTTrainer, one epoch over the stage 1 samples."""

from __future__ import annotations

import math

import pytest
from train_helpers import REPO, SAMPLES, metrics, run_inprocess

pytestmark = pytest.mark.slow


def test_oom_in_the_first_steps_halves_the_micro_batch_and_keeps_the_schedule(tiny_model, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("AMIGO_FAULT_OOM_ABOVE", "2")
    args = ["--stage", "1", "--model", str(tiny_model), "--data", str(SAMPLES / "stage1.jsonl"),
            "--output-dir", str(out), "--config", str(REPO / "train" / "configs" / "demo.yaml"),
            # one epoch, not max_steps: the number of optimizer steps comes from the batches themselves
            "--set", "max_steps=-1", "--set", "max_length=256", "--set", "eval_fraction=0",
            "--set", "save_steps=1000", "--set", "per_device_train_batch_size=8",
            "--set", "gradient_accumulation_steps=2", "--set", "logging_steps=1"]
    assert run_inprocess(args) == 0
    m = metrics(out)
    # 8 -> 4 -> 2: two back-offs, each the same 16 sequences per optimizer step
    assert [(e["from"], e["to"]) for e in m["oom_backoff"]] == [([8, 2], [4, 4]), ([4, 4], [2, 8])]
    assert all(e["step"] == 0 and e["sequences"] == 16 and "out of memory" in e["error"] for e in m["oom_backoff"])
    assert (m["per_device_train_batch_size"], m["gradient_accumulation_steps"]) == (2, 8)
    # the steps the planned 8 x 2 makes of these rows: the Trainer's ceil(ceil(rows / 8) / 2)
    rows = m["train_rows_kept"]
    planned_steps = math.ceil(math.ceil(rows / 8) / 2)
    assert m["steps"] == m["total_steps"] == planned_steps == math.ceil(math.ceil(rows / 2) / 8)
    assert m["exit_reason"] == "completed" and math.isfinite(m["last_loss"])
    log = (out / "train.log").read_text()
    assert "out of memory at micro-batch 8 (step 0): micro-batch 4 x grad-accum 4 instead of 8 x 2" in log
    assert "micro-batch 2 x grad-accum 8 instead of 4 x 4, the same 16 sequences per step" in log


def test_the_injected_fault_is_a_training_forward_of_more_than_k_sequences():
    import torch

    from train.callbacks import inject_oom_above
    from train.tiny import build_model, build_tokenizer

    model = build_model(build_tokenizer())
    model.train()
    h = inject_oom_above(model, 1)
    try:
        model(input_ids=torch.ones(1, 4, dtype=torch.long))  # one sequence: fits
        with pytest.raises(torch.OutOfMemoryError):
            model(input_ids=torch.ones(2, 4, dtype=torch.long))
        model.eval()
        model(input_ids=torch.ones(2, 4, dtype=torch.long))  # evaluation holds no gradients: not injected
    finally:
        h.remove()
