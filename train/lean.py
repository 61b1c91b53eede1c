"""A library a process will not use, kept out of it: bitsandbytes.

peft imports bitsandbytes whenever it is installed, and bitsandbytes' import wraps its CPU kernels in
torch.compile, which pulls in torch's dynamo and inductor: ~1.9 CPU-s at the start of every process
that loads a model (`import peft, transformers.trainer, trl`: 9.0 CPU-s with it, 7.1 without, mean of
5 on the 2-core test machine). A process needs it only for NF4 weights (QLoRA) or, training on CUDA,
for the paged 8-bit AdamW (train/accel.py); a LoRA stage, its HumanEval or a merged model's check on a
machine without CUDA never calls it.

Only a process's own entry point may decide this: it marks bitsandbytes missing for the rest of that
process. Never call it from code an in-process caller runs (the tests, the CLI).
"""

from __future__ import annotations

import sys


def skip_bitsandbytes(method: str, *, training: bool) -> bool:
    """Mark bitsandbytes as not installed in this process unless METHOD or TRAINING on CUDA needs it.
    True when it was marked. Call before peft or transformers load a model."""
    if method == "qlora" or "bitsandbytes" in sys.modules:
        return False
    if training:
        import torch

        if torch.cuda.is_available():  # the paged 8-bit optimizer (train/accel.py)
            return False
    # None in sys.modules: `import bitsandbytes` raises ImportError and importlib.util.find_spec returns
    # None, which is how peft (is_bnb_available) and transformers (is_bitsandbytes_available) ask
    sys.modules["bitsandbytes"] = None
    return True
