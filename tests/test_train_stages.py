"""Each stage trains on the tiny model and writes an adapter that loads and generates; stages chain."""

from __future__ import annotations

import json

import pytest
from train_helpers import argv, generate_with_adapter, metrics, progress_lines, run_inprocess


@pytest.mark.slow
def test_chain_1_to_5(tiny_model, tmp_path, capsys):
    """1 -> 2 -> 3 -> 4 -> 5: each stage continues the previous adapter; stage 5 is DPO on stage 4's."""
    prev = None
    for stage in (1, 2, 3, 4, 5):
        out = tmp_path / f"s{stage}"
        extra = ["--adapter-from", str(prev)] if prev else []
        assert run_inprocess(argv(stage, tiny_model, out, *extra)) == 0

        m = metrics(out)
        assert m["stage"] == stage and m["exit_reason"] == "completed"
        assert m["trainer"] == ("dpo" if stage == 5 else "sft")
        assert m["steps"] == m["total_steps"] == 3
        assert m["adapter_from"] == (str(prev) if prev else None)
        assert m["tokens_seen"] > 0 and m["tokens_per_s"] > 0 and m["median_step_s"] > 0
        assert m["first_loss"] is not None and m["last_loss"] is not None
        assert m["gc_recompute_observed"] is True  # checkpointing really ran in the Trainer's path
        assert m["accelerants"]["attn_implementation"] == "sdpa" and m["accelerants"]["optim"] == "adamw_torch"

        # one progress line per logging step (logging_steps=1), parseable, ending at the last step;
        # then the held-out evaluation's own line (eval_steps=4 > 3 steps: only the final one)
        lines = progress_lines(out)
        train_lines = [p for p in lines if "eval_loss" not in p]
        assert [p["step"] for p in train_lines] == [1, 2, 3]
        assert all(p["stage"] == stage and p["total"] == 3 and p["tokens_per_s"] >= 0 for p in train_lines)
        assert [(p["step"], p["eval_loss"]) for p in lines if "eval_loss" in p] == [(3, m["eval_loss"]["final"])]
        assert m["eval_rows"] == 3 and m["train_rows"] + 3 in (30, 32)  # 10% of the sample rows, by hash
        assert m["kept"] == {"which": "best", "step": 3, "eval_loss": m["eval_loss"]["best"]}

        # keep the last 2 checkpoints, complete ones
        ckpts = sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*"))
        assert ckpts == ["checkpoint-2", "checkpoint-3"]

        adapter = out / "adapter"
        assert (adapter / "adapter_config.json").is_file()
        meta = json.loads((adapter / "amigo_adapter.json").read_text())  # how it was trained, for the next stage
        assert meta["method"] == "lora" and meta["quantization"] is None and meta["stage"] == stage
        assert meta["base"] == {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 1024}
        assert not (out / "best").exists()  # a completed run's best adapter is adapter/ now
        assert not (adapter / "ref").exists()  # DPO's frozen reference copy is not shipped
        generate_with_adapter(tiny_model, adapter)
        prev = adapter

    # the AMIGO_DONE line is metrics.json's content
    done = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("AMIGO_DONE ")]
    assert len(done) == 5 and json.loads(done[-1].split(" ", 1)[1]) == metrics(tmp_path / "s5")


@pytest.mark.slow
def test_qlora_nf4_then_dpo(tiny_model, tmp_path):
    """QLoRA: NF4 base (bitsandbytes on CPU), fp32 adapter; then a DPO stage on that adapter, also NF4."""
    s1, s5 = tmp_path / "q1", tmp_path / "q5"
    assert run_inprocess(argv(1, tiny_model, s1, "--method", "qlora")) == 0
    assert metrics(s1)["method"] == "qlora"
    # no --method: a continued adapter's method (amigo_adapter.json) carries over
    assert run_inprocess(argv(5, tiny_model, s5, "--adapter-from", str(s1 / "adapter"))) == 0
    assert metrics(s5)["method"] == "qlora"
    assert metrics(s5)["last_loss"] is not None
    generate_with_adapter(tiny_model, s5 / "adapter", method="qlora")


@pytest.mark.slow
def test_stage2_from_base_and_tensorboard(tiny_model, tmp_path):
    """--from-base starts a fresh adapter at stage > 1; report_to=tensorboard writes event files in tb/."""
    out = tmp_path / "s2"
    assert run_inprocess(argv(2, tiny_model, out, "--from-base", "--set", "report_to=tensorboard")) == 0
    assert list((out / "tb").rglob("events.out.tfevents.*"))
    assert metrics(out)["adapter_from"] is None
