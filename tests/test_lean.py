"""train/lean.py: a LoRA process on a machine without CUDA runs without bitsandbytes; QLoRA keeps it.

Each case is its own Python process (the mark lasts for the process: never in this test worker).
The trainers, HumanEval and export tests run the entry points that call it on the tiny model (LoRA
without it, the QLoRA adapters of tests/test_export.py and test_rehearse.py with it).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import REPO

PROBE = """
import importlib.util, json, sys
from train.lean import skip_bitsandbytes
marked = skip_bitsandbytes(sys.argv[1], training=sys.argv[2] == "train")
from transformers.utils.import_utils import is_bitsandbytes_available
try:
    import bitsandbytes  # noqa: F401
    imports = True
except ImportError:
    imports = False
print(json.dumps({"marked": marked, "spec": importlib.util.find_spec("bitsandbytes") is not None,
                  "transformers_sees_it": is_bitsandbytes_available(), "imports": imports}))
"""


def probe(method: str, mode: str) -> dict:
    r = subprocess.run([sys.executable, "-c", PROBE, method, mode], cwd=REPO, capture_output=True, text=True,
                       timeout=120, env={"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("method,mode", [("lora", "train"), ("merged", "eval")])
def test_a_process_that_never_needs_bitsandbytes_does_not_import_it(method, mode):
    assert probe(method, mode) == {"marked": True, "spec": False, "transformers_sees_it": False, "imports": False}


@pytest.mark.slow  # imports bitsandbytes: ~4 s
def test_qlora_keeps_bitsandbytes():
    assert probe("qlora", "eval") == {"marked": False, "spec": True, "transformers_sees_it": True, "imports": True}
