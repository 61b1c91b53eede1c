"""Helpers for tests/test_train_*.py: `python -m train` argument lists, runners, outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "train" / "samples"
DEMO = REPO / "train" / "configs" / "demo.yaml"

# a few steps at seq <= 256 (the longest sample prompt is 304 tokens: keep_start drops only those rows)
FAST = ["--config", str(DEMO), "--set", "max_steps=3", "--set", "max_length=256", "--set", "save_steps=2",
        "--set", "per_device_train_batch_size=2"]


def argv(stage: int, model: Path, out: Path, *extra: str, data: Path | None = None) -> list[str]:
    data = data or SAMPLES / f"stage{stage}.jsonl"
    return ["--stage", str(stage), "--model", str(model), "--data", str(data), "--output-dir", str(out),
            *FAST, *extra]


def run_inprocess(args: list[str]) -> int:
    from train.__main__ import main

    return main(args)


def run_subprocess(args: list[str], env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "train", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def progress_lines(out: Path) -> list[dict]:
    lines = (out / "train.log").read_text().splitlines()
    return [json.loads(line.split(" ", 1)[1]) for line in lines if line.startswith("AMIGO_PROGRESS ")]


def generate_with_adapter(model_dir: Path, adapter_dir: Path, method: str = "lora") -> str:
    """Load base + adapter the way a user would and generate a few tokens."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {}
    if method == "qlora":
        from train.model import quantization_config

        kwargs = {"quantization_config": quantization_config("qlora"), "dtype": torch.bfloat16}
    tok = AutoTokenizer.from_pretrained(adapter_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    model = PeftModel.from_pretrained(base, adapter_dir)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Write slugify."}], add_generation_prompt=True,
                                     return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]
    return tok.decode(out[0, prompt["input_ids"].shape[1]:])
