"""Peak memory of the loss: full logits (a plain transformers loop) vs TRL 1.16's fused LM head.

    python bench/logits_memory.py [--vocab 1024 131072] [--seq 512] [--batch 2]

One subprocess per (vocab, mode), so one measurement never sees another's allocations. Each
builds train/tiny.py's shape (hidden 64, 2 layers) with the given vocabulary, wraps it in LoRA
(r 8, all linear, as train/model.py does) and runs one forward + backward on B x S random
tokens, on the CPU in fp32:

    full   model(input_ids, labels=...).loss: transformers' own loss path (the logits
           [B, S, V] are built, upcast and log-softmaxed by cross_entropy)
    fused  trl.trainer.utils.add_fused_lm_head, then model(..., fused_lm_head=True): what
           SFTTrainer.compute_loss and DPOTrainer._compute_loss call (sft_trainer.py:1611,
           dpo_trainer.py:1299), the head projected in [4096, 32768] tiles
    sft    one real SFTTrainer step: a forward hook on lm_head counts its calls (0: the
           trainer never built full logits)

Peak = VmHWM after the step minus VmRSS before it (Linux: writing 5 to /proc/self/clear_refs
resets VmHWM; a warm-up step first, so one-time allocations are not counted; glibc told to map
and unmap every block >= 64 KiB, so RSS follows what torch allocates). Prints one JSON line per
measurement with the estimator's loss term for the same shape beside it
(planning/estimate.py `loss_bytes`, device "cpu": the fp32 CPU path).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def _model(vocab: int, fused: bool):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    if fused:
        from trl.trainer.utils import add_fused_lm_head

        add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))  # SFTTrainer's outputs
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def _step(model, ids, fused: bool) -> None:
    if fused:
        out = model(input_ids=ids, labels=ids, fused_lm_head=True)
    else:
        out = model(input_ids=ids, labels=ids)
    out.loss.backward()


def child(vocab: int, mode: str, seq: int, batch: int) -> dict:
    import torch

    torch.set_num_threads(1)
    ids = torch.randint(0, vocab, (batch, seq))
    if mode == "sft":
        return _sft_step(vocab, seq, batch)
    model = _model(vocab, fused=mode == "fused")
    _step(model, ids, mode == "fused")  # warm-up: autograd and allocator one-time costs
    model.zero_grad(set_to_none=False)
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    _step(model, ids, mode == "fused")
    peak = _status_kib("VmHWM")
    return {"vocab": vocab, "mode": mode, "tokens": batch * seq, "peak_delta_mib": round((peak - before) / 1024, 1)}


def _sft_step(vocab: int, seq: int, batch: int) -> dict:
    """One SFTTrainer step; a forward hook on lm_head counts calls (a full-logits forward calls it)."""
    import tempfile

    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from train.tiny import build_tokenizer

    tok = build_tokenizer(vocab_size=1024)
    model = _model(vocab, fused=False).get_base_model()  # SFTTrainer adds the fused head itself
    calls = []
    model.lm_head.register_forward_hook(lambda *a: calls.append(1))
    rows = [{"prompt": [{"role": "user", "content": "write add " * (seq // 8)}],
             "completion": [{"role": "assistant", "content": "def add(a, b): return a + b " * (seq // 16)}]}
            for _ in range(batch * 2)]
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(output_dir=out, per_device_train_batch_size=batch, max_steps=2, max_length=seq,
                         report_to="none", use_cpu=True, save_strategy="no", logging_steps=1)
        from peft import LoraConfig

        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                             peft_config=LoraConfig(r=8, target_modules="all-linear", task_type="CAUSAL_LM"))
        trainer.train()
    return {"vocab": vocab, "mode": "sft", "lm_head_forward_calls": len(calls), "steps": 2}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--vocab", type=int, nargs="+", default=[1024, 131072])
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--child", nargs=2, metavar=("VOCAB", "MODE"))
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(int(a.child[0]), a.child[1], a.seq, a.batch)))
        return
    rows = []
    for vocab in a.vocab:
        for mode in ("full", "fused", "sft"):
            r = subprocess.run([sys.executable, __file__, "--child", str(vocab), mode, "--seq", str(a.seq),
                                "--batch", str(a.batch)], capture_output=True, text=True, cwd=REPO,
                               env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1",
                                    # glibc: every block >= 64 KiB its own mapping, returned on free, so
                                    # RSS follows the allocations (no reuse of the warm-up's freed heap)
                                    "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"})
            if r.returncode:
                raise SystemExit(r.stderr[-3000:])
            row = json.loads(r.stdout.strip().splitlines()[-1])
            if "peak_delta_mib" in row:
                row["bytes_per_token_per_vocab"] = round(row["peak_delta_mib"] * 2**20 / (row["tokens"] * vocab), 2)
            rows.append(row)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
