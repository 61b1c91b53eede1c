"""Checkpoint/resume after SIGKILL, the --max-runtime-s budget stop, and gradient checkpointing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from train_helpers import REPO, argv, generate_with_adapter, metrics, run_inprocess


@pytest.mark.slow
def test_sigkill_then_resume_auto_ends_at_same_step(tiny_model, tmp_path):
    out = tmp_path / "out"
    args = argv(1, tiny_model, out, "--set", "max_steps=8", "--resume", "auto")
    # 0.3 s per step: the kill lands between checkpoint-2 and the end (step 8)
    env = {**os.environ, "AMIGO_FAULT_STEP_DELAY_S": "0.3"}
    proc = subprocess.Popen([sys.executable, "-m", "train", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while not (out / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file():
        assert proc.poll() is None, "training ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "metrics.json").exists() and not (out / "adapter").exists()
    done = sorted(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("checkpoint-*")
                  if (p / "trainer_state.json").is_file())
    assert done and max(done) < 8

    # same arguments again: continues from the newest complete checkpoint
    assert run_inprocess(args) == 0
    m = metrics(out)
    assert m["steps"] == 8 and m["exit_reason"] == "completed"
    assert m["resumed_from"].endswith(f"checkpoint-{max(done)}")
    assert m["steps_this_run"] == 8 - max(done)
    generate_with_adapter(tiny_model, out / "adapter")


@pytest.mark.slow
def test_incomplete_checkpoint_is_skipped(tiny_model, tmp_path):
    """A checkpoint dir cut off mid-save (no trainer_state.json) is not resumed from."""
    out = tmp_path / "out"
    assert run_inprocess(argv(1, tiny_model, out, "--set", "max_steps=2")) == 0
    torn = out / "checkpoints" / "checkpoint-9"
    torn.mkdir()
    (torn / "adapter_model.safetensors").write_bytes(b"partial")
    from train.mirror import complete_checkpoints

    assert [s for s, _ in complete_checkpoints(out / "checkpoints")] == [2]


@pytest.mark.slow
def test_max_runtime_stops_with_checkpoint_and_exit_3(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("AMIGO_FAULT_STEP_DELAY_S", "0.4")
    out = tmp_path / "out"
    rc = run_inprocess(argv(1, tiny_model, out, "--set", "max_steps=50", "--set", "save_steps=100",
                            "--max-runtime-s", "1"))
    assert rc == 3
    m = metrics(out)
    assert m["exit_reason"] == "budget" and 0 < m["steps"] < 50
    assert (out / "checkpoints" / f"checkpoint-{m['steps']}" / "trainer_state.json").is_file()
    generate_with_adapter(tiny_model, out / "adapter")


@pytest.mark.slow
def test_gradient_checkpointing_really_recomputes(tiny_model):
    """from_pretrained returns eval mode, where checkpointing is skipped; enable_gradient_checkpointing
    (and the Trainer) switch to train mode, and the backward pass then re-runs each decoder layer."""
    import torch

    from train import model as M
    from train.callbacks import _inside_first_layer
    from train.config import TrainConfig

    def layer_calls(peft_model) -> int:
        calls = []
        hook = _inside_first_layer(peft_model).register_forward_pre_hook(lambda *a: calls.append(1))
        x = torch.randint(0, 100, (2, 16))
        peft_model(input_ids=x, labels=x).loss.backward()
        hook.remove()
        return len(calls)

    cfg = TrainConfig(model=str(tiny_model), data="unused")
    choice = {"device": "cpu", "bf16": False, "attn_implementation": "sdpa"}
    model = M.with_adapter(M.load_base_model(cfg.model, "lora", choice), cfg)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.eval()  # the state from_pretrained leaves a model in
    assert layer_calls(model) == 1  # the trap: "enabled" but in eval mode, nothing is recomputed

    M.enable_gradient_checkpointing(model)
    assert model.training
    assert layer_calls(model) == 2  # forward + recompute in backward


@pytest.mark.slow
def test_resume_auto_takes_the_newest_of_several_complete_checkpoints(tiny_model, tmp_path):
    """Three complete checkpoints (2, 4, 6): --resume auto continues from checkpoint-6, not an older one."""
    out = tmp_path / "out"
    first = argv(1, tiny_model, out, "--set", "max_steps=6", "--set", "save_steps=2", "--set", "save_total_limit=3")
    assert run_inprocess(first) == 0
    from train.mirror import complete_checkpoints

    assert [step for step, _ in complete_checkpoints(out / "checkpoints")] == [2, 4, 6]
    again = argv(1, tiny_model, out, "--set", "max_steps=8", "--set", "save_steps=2", "--set", "save_total_limit=3",
                 "--resume", "auto")
    assert run_inprocess(again) == 0
    m = metrics(out)
    assert m["resumed_from"].endswith("checkpoint-6") and m["steps"] == 8 and m["steps_this_run"] == 2


# --- the resume point, fast: which of several complete checkpoints `--resume auto` takes ------------
def _session(out, monkeypatch, store_uri: str = "", run_id: str = "s1-local-20260101-000000-abcd"):
    from train.config import TrainConfig
    from train.session import Session

    monkeypatch.setenv("AMIGO_RUN_ID", run_id)
    if store_uri:
        monkeypatch.setenv("AMIGO_STORE_URI", store_uri)
    else:
        monkeypatch.delenv("AMIGO_STORE_URI", raising=False)
    monkeypatch.delenv("AMIGO_STORE_ENDPOINT", raising=False)
    return Session(TrainConfig(stage=1, model="m", data="d", output_dir=str(out), resume="auto"))


def _checkpoint(root, step: int, complete: bool = True):
    d = root / f"checkpoint-{step}"
    d.mkdir(parents=True)
    (d / "adapter_model.safetensors").write_bytes(b"w" * step)
    if complete:  # the Trainer writes trainer_state.json last
        (d / "trainer_state.json").write_text(f'{{"global_step": {step}}}')
    return d


def test_resume_auto_takes_the_newest_complete_local_checkpoint(tmp_path, monkeypatch):
    """Checkpoints 2, 4 and 10 complete, 12 cut off mid-save: checkpoint-10 (by step, not by name:
    "checkpoint-10" < "checkpoint-4" as text)."""
    out = tmp_path / "out"
    for step in (4, 10, 2):
        _checkpoint(out / "checkpoints", step)
    _checkpoint(out / "checkpoints", 12, complete=False)
    s = _session(out, monkeypatch)
    assert s.resume_checkpoint() == str(out / "checkpoints" / "checkpoint-10") == s.resumed_from


def test_resume_auto_fetches_the_newest_checkpoint_from_the_store(tmp_path, monkeypatch):
    """No local checkpoint (a fresh machine after preemption): the newest mirrored one is fetched."""
    from train.storage import names, open_store

    run_id = "s1-local-20260101-000000-abcd"
    store = open_store(f"file://{tmp_path}/store")
    for step in (2, 10, 4):
        store.put_dir(_checkpoint(tmp_path / "mirrored", step), names.checkpoint(run_id, f"checkpoint-{step}"))
    out = tmp_path / "out"
    s = _session(out, monkeypatch, f"file://{tmp_path}/store", run_id)
    try:
        got = s.resume_checkpoint()
    finally:
        if s.mirror:
            s.mirror.close()
    assert got == str(out / "checkpoints" / "checkpoint-10")
    assert s.resumed_from == f"store:{names.checkpoint(run_id, 'checkpoint-10')}"
    assert (out / "checkpoints" / "checkpoint-10" / "adapter_model.safetensors").read_bytes() == b"w" * 10
