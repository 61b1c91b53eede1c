"""On a CUDA GPU (`make test-gpu`, never in CI): the training path with bitsandbytes' CUDA NF4 kernels,
bf16 and the GPU's own memory counters — what the CPU runs elsewhere in the suite cannot show.

Marked `gpu`: `make test` and `make test-fast` deselect it. Run where there is no CUDA GPU, it fails
with that reason instead of skipping (a skip would read as a pass).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from train_helpers import REPO, argv, generate_with_adapter, metrics, run_inprocess

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


@pytest.fixture(autouse=True)
def cuda():
    import torch

    assert torch.cuda.is_available(), "a `gpu` test needs a CUDA GPU and a CUDA build of torch (see make test-gpu)"


def test_qlora_stage_trains_on_cuda_with_nf4(tiny_model, tmp_path):
    out = tmp_path / "s1"
    assert run_inprocess(argv(1, tiny_model, out, "--method", "qlora")) == 0
    m = metrics(out)
    assert m["device"] == "cuda" and m["gpu_name"] and m["gpu_mem_gib"] > 0
    assert m["method"] == "qlora" and m["accelerants"]["bf16"] is True
    assert 0 < m["peak_mem_allocated_gib"] <= m["peak_mem_reserved_gib"] < m["gpu_mem_gib"]
    assert m["steps"] == 3 and m["last_loss"] is not None
    generate_with_adapter(tiny_model, out / "adapter", method="qlora")


def test_bench_measures_cuda_memory(tmp_path):
    cmd = [sys.executable, "bench/train_bench.py", "--shape", "tiny", "--method", "qlora", "--seq", "64",
           "--batch", "2", "--steps", "3", "--cache", str(tmp_path / "models"), "--out", str(tmp_path / "b.jsonl")]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    result = json.loads(p.stdout.strip().splitlines()[-1])
    assert result["device"] != "cpu" and result["peak_mem_kind"] == "cuda_max_allocated"
    assert result["peak_mem_gib"] > 0 and result["tokens_per_s"] > 0
