"""Numerics of training: the adapter trains in fp32 under QLoRA, and half precision follows the GPU.

- QLoRA: TRL casts the adapter to bf16 when the base is quantized; 8 significant bits round a
  lr-5e-6 update away. train.model.upcast_trainable puts it back to fp32 (the NF4 base still
  computes in bf16): the test counts adapter elements that changed after 4 real steps.
- bf16 only where the GPU has it natively (compute capability >= 8.0); below, fp16 with loss scaling.
  There is no CUDA here: those tests fake only the hardware query (torch.cuda's availability,
  capability and bf16-support answers); everything else is the real train.accel / train.model code.
"""

from __future__ import annotations

import pytest
from train_helpers import argv, metrics, run_inprocess

# --- QLoRA keeps an fp32 adapter -----------------------------------------------------------------


@pytest.fixture(scope="module")
def qlora_stage1(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("q1")
    assert run_inprocess(argv(1, tiny_model, out, "--method", "qlora")) == 0
    return out / "adapter"


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 5], ids=["sft", "dpo"])
def test_qlora_at_lr_5e_6_changes_most_adapter_elements(tiny_model, qlora_stage1, tmp_path, stage, capsys):
    import torch
    from safetensors.torch import load_file

    out = tmp_path / f"s{stage}"
    rc = run_inprocess(argv(stage, tiny_model, out, "--method", "qlora", "--adapter-from", str(qlora_stage1),
                            "--set", "learning_rate=5e-6", "--set", "max_steps=4", "--set", "keep=last"))
    assert rc == 0 and metrics(out)["method"] == "qlora"
    before = load_file(qlora_stage1 / "adapter_model.safetensors")
    after = load_file(out / "adapter" / "adapter_model.safetensors")
    keys = [k for k in before if "lora_A" in k]
    changed = sum(int((after[k].float() != before[k].float()).sum()) for k in keys)
    total = sum(before[k].numel() for k in keys)
    with capsys.disabled():
        print(f"\nQLoRA stage {stage}, 4 steps at lr 5e-6: {changed} of {total} lora_A elements changed")
    assert changed >= 0.9 * total, f"only {changed} of {total} lora_A elements moved: the adapter is not fp32"
    assert all(after[k].dtype == torch.float32 for k in after)


# --- bf16 only on compute capability >= 8.0 --------------------------------------------------------


def _fake_gpu(monkeypatch, capability: tuple[int, int]) -> None:
    """Only the hardware query is faked: a CUDA device of this compute capability whose driver, like a
    real T4's, answers is_bf16_supported() == True (bf16 by emulation)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


@pytest.mark.parametrize(("capability", "bf16", "fp16", "dtype"), [
    ((7, 5), False, True, "float16"),  # T4
    ((7, 0), False, True, "float16"),  # V100
    ((8, 0), True, False, "bfloat16"),  # A100
    ((8, 9), True, False, "bfloat16"),  # RTX 4050 / L4
])
def test_half_precision_follows_compute_capability(monkeypatch, capability, bf16, fp16, dtype):
    import torch

    from train import accel, model
    from train.config import TrainConfig

    _fake_gpu(monkeypatch, capability)
    choice = accel.choose(TrainConfig(), "sft")
    assert (choice["bf16"], choice["fp16"]) == (bf16, fp16)
    assert choice["compute_capability"] == f"{capability[0]}.{capability[1]}"
    # QLoRA dequantizes NF4 to the compute dtype; LoRA's frozen base is stored in it
    assert model.quantization_config("qlora", choice).bnb_4bit_compute_dtype == getattr(torch, dtype)
    assert accel.model_dtype("lora", choice) == getattr(torch, dtype)
    if fp16:
        assert "fp16 with loss scaling" in choice["reasons"]["bf16"]
        assert choice["attn_implementation"] == "sdpa"  # flash-attention 2 needs >= 8.0 too


def test_fp16_reaches_the_trainer_arguments(monkeypatch, tmp_path):
    """The Trainer's fp16 flag (autocast + GradScaler) is what the choice says; bf16 stays off."""
    from train.config import TrainConfig
    from train.session import Session

    _fake_gpu(monkeypatch, (7, 5))
    cfg = TrainConfig(model=str(tmp_path), data="x.jsonl", output_dir=str(tmp_path / "o"))
    session = Session(cfg)
    session.restore_signals()
    kw = session.training_kwargs()
    assert kw["fp16"] is True and kw["bf16"] is False


def test_cpu_stays_fp32_for_lora_and_bf16_compute_for_qlora():
    import torch

    from train import accel, model
    from train.config import TrainConfig

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the CPU branch is not the one taken")
    choice = accel.choose(TrainConfig(), "sft")
    assert not choice["bf16"] and not choice["fp16"] and choice["compute_capability"] is None
    assert accel.model_dtype("lora", choice) == torch.float32
    assert model.quantization_config("qlora", choice).bnb_4bit_compute_dtype == torch.bfloat16
