"""`torchrun --nproc_per_node 2` on CPU (gloo): one SFT stage, one adapter, both ranks agree."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from train_helpers import REPO, argv, generate_with_adapter, metrics


@pytest.mark.slow
def test_torchrun_two_processes(tiny_model, tmp_path):
    tiny = tiny_model
    out = tmp_path / "ddp"
    # --standalone: the rendezvous store binds port 0 itself (no port picked here that another
    # process could take before torchrun binds it)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "train", *argv(1, tiny, out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]

    m = metrics(out)
    assert m["world_size"] == 2 and m["steps"] == 3
    assert len(m["rank_digests"]) == 2 and m["ranks_agree"] is True  # identical adapters on both ranks
    # rank 0 alone writes: one AMIGO_DONE line, one set of progress lines
    assert sum(ln.startswith("AMIGO_DONE ") for ln in p.stdout.splitlines()) == 1
    lines = [json.loads(ln.split(" ", 1)[1]) for ln in p.stdout.splitlines() if ln.startswith("AMIGO_PROGRESS")]
    assert [x["step"] for x in lines if "eval_loss" not in x] == [1, 2, 3]
    # the held-out rows are evaluated across both ranks: one eval line, its loss in metrics.json
    assert [(x["step"], x["eval_loss"]) for x in lines if "eval_loss" in x] == [(3, m["eval_loss"]["final"])]
    assert m["kept"]["which"] == "best"
    # tokens per step double: 2 ranks × batch 2 × rows of 64+ tokens
    assert m["tokens_seen"] > 3 * 2 * 64
    generate_with_adapter(tiny, out / "adapter")
