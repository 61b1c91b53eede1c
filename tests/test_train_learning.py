"""Training learns: on a toy task the tiny model can fit, a stage lowers its loss by a stated margin and
moves its adapter; the same stage at learning rate 0 fails that check (so a run that trains nothing —
a lost learning rate, frozen adapter weights, an optimizer that never steps — cannot pass as trained).

The toy task: one mapping repeated in every row ("Say the magic word." -> "abracadabra", and for DPO
that answer chosen over "hocus pocus"). Every batch is the same rows, so the per-step loss is a
function of the weights alone: at lr 0 it is the same number at every step.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_helpers import argv, metrics, run_inprocess

pytestmark = pytest.mark.slow

PROMPT, ANSWER, WRONG = "Say the magic word.", "abracadabra", "hocus pocus"
STEPS, LR = 20, 1e-2
# Margins, from runs of this test (20 steps at lr 1e-2, seq 64, batch 2; CPU):
#   SFT: loss 6.98 -> 5.90 (-1.08 nats); the check asks for -0.5.
#   DPO: loss ln 2 = 0.693 -> 0.08, reward margin (chosen - rejected) 0 -> 2.4; the check asks
#        for loss <= 0.5 and a margin >= 0.5.
SFT_MIN_DROP_NATS = 0.5
DPO_MAX_LOSS, DPO_MIN_MARGIN = 0.5, 0.5


def toy_rows(trainer: str, n: int = 16) -> list[dict]:
    if trainer == "dpo":
        return [{"prompt": PROMPT, "chosen": ANSWER, "rejected": WRONG}] * n
    return [{"instruction": PROMPT, "code": ANSWER}] * n


def train_toy(tiny_model: Path, tmp_path: Path, stage: int, lr: float, steps: int = STEPS) -> Path:
    data = tmp_path / f"toy-{stage}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in toy_rows("dpo" if stage == 5 else "sft")))
    out = tmp_path / f"s{stage}-lr{lr:g}"
    extra = ["--from-base"] if stage > 1 else []
    assert run_inprocess(argv(stage, tiny_model, out, "--set", f"max_steps={steps}", "--set", f"learning_rate={lr}",
                              "--set", "save_steps=1000", "--resume", "never", *extra, data=data)) == 0
    return out


def adapter_moved(out: Path) -> float:
    """Largest |weight| of the adapter's lora_B matrices: PEFT initialises them to zero, so any
    training step that reached the adapter leaves them non-zero."""
    from safetensors.torch import load_file

    tensors = load_file(out / "adapter" / "adapter_model.safetensors")
    bs = [t for name, t in tensors.items() if "lora_B" in name]
    assert bs, sorted(tensors)[:5]
    return max(float(t.abs().max()) for t in bs)


def last_logged(out: Path, key: str) -> float:
    """KEY from the trainer's last log entry that has it (trainer_state.json of the final checkpoint)."""
    (state,) = (out / "checkpoints").glob("checkpoint-*/trainer_state.json")
    return [e[key] for e in json.loads(state.read_text())["log_history"] if key in e][-1]


def learning_failures(out: Path, trainer: str) -> list[str]:
    """Why the run at OUT did not learn the toy task (empty: it did)."""
    m = metrics(out)
    why = []
    if trainer == "sft" and not m["first_loss"] - m["last_loss"] >= SFT_MIN_DROP_NATS:
        why.append(f"loss {m['first_loss']:.3f} -> {m['last_loss']:.3f}: less than {SFT_MIN_DROP_NATS} nats lower")
    if trainer == "dpo":
        if not m["last_loss"] <= DPO_MAX_LOSS:
            why.append(f"DPO loss {m['first_loss']:.3f} -> {m['last_loss']:.3f}: not <= {DPO_MAX_LOSS}")
        margin = last_logged(out, "rewards/margins")
        if not margin >= DPO_MIN_MARGIN:
            why.append(f"reward margin chosen - rejected {margin:.3f}: not >= {DPO_MIN_MARGIN}")
    if not adapter_moved(out) > 1e-4:
        why.append("the adapter did not move (lora_B still zero)")
    return why


@pytest.mark.parametrize("stage, trainer", [(1, "sft"), (5, "dpo")])
def test_a_stage_learns_the_toy_task_and_lr_0_does_not(tiny_model, tmp_path, stage, trainer):
    trained = train_toy(tiny_model, tmp_path, stage, LR)
    assert learning_failures(trained, trainer) == []
    assert metrics(trained)["steps"] == STEPS

    frozen = train_toy(tiny_model, tmp_path, stage, 0.0, steps=4)  # at lr 0 nothing moves: 4 steps show it
    why = learning_failures(frozen, trainer)
    assert why and why[-1] == "the adapter did not move (lora_B still zero)", why
    assert metrics(frozen)["first_loss"] == pytest.approx(metrics(frozen)["last_loss"], abs=1e-6)
