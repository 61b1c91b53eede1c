"""A stage's model on this machine: which adapter, the base it was trained against, and `try`.

    stage_model(cfg, stage, run_id)    -> StageModel: the run, its downloaded adapter, base, method
    load(sm, device)                   -> (model, tokenizer): base + adapter, ready to generate
    try_prompt(cfg, sm, prompt, ...)   streams the answer to the terminal, token by token

Where it runs: train/loader.py decides (the one loader of eval, try, export and the benchmark): the base
as the stage trained on it (NF4 for QLoRA), on a CUDA GPU when there is one - a LoRA chain whose bf16
base does not fit the GPU gets the NF4 base there (a 12B needs ~7.7 GiB that way, so on the 6 GB laptop
only up to ~8B fits and a 12B is for the GGUF with partial offload, `export --format gguf`) - otherwise
the CPU (slow beyond ~3B, fine for the demo's tiny model). torch, transformers and peft are imported
here only inside functions: the controller runs without them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from amigo_burst.config import AmigoConfig
from amigo_burst.errors import UserError
from amigo_burst.lifecycle.download import ensure_downloaded
from amigo_burst.stages import get_stage
from amigo_burst.state.records import Run, open_records


@dataclass
class StageModel:
    stage: int
    run: Run
    adapter: Path  # .amigo/runs/<run>/adapter (verified download)
    base: str  # hub id or local folder, as the run trained against it
    method: str  # lora | qlora: how the base was loaded in training


def stage_model(cfg: AmigoConfig, stage: str | int, run_id: str | None = None) -> StageModel:
    """The newest successful run of the stage (or RUN), its adapter fetched if it is not here yet."""
    n = get_stage(str(stage)).number
    runs = open_records(cfg.root)
    if run_id:
        run = runs.get(run_id)
        if run.stage != n:
            raise UserError(f"run {run.id} is a stage {run.stage} run, not stage {n}")
        if run.status not in ("SUCCEEDED", "STOPPED"):
            raise UserError(f"run {run.id} is {run.status}: it has no adapter")
    else:
        run = runs.latest(n)
        if run is None:
            raise UserError(f"no successful stage {n} run yet: `amigo-burst launch --stage {n}` first")
    adapter = ensure_downloaded(cfg, run.id) / "adapter"
    metrics = run.metrics or {}
    base = metrics.get("base_model") or _resolved_base(cfg)
    return StageModel(n, run, adapter, str(base), metrics.get("method") or "lora")


def _resolved_base(cfg: AmigoConfig) -> str:
    p = cfg.resolve(cfg.model.base)
    return str(p) if p.exists() else cfg.model.base


def local_base(cfg: AmigoConfig, sm: StageModel) -> str:
    """The base as this machine reaches it: the folder or hub id the run trained against, else (a
    folder on the machine that trained) amigo.toml's base."""
    if Path(sm.base).exists() or not Path(sm.base).is_absolute():
        return sm.base
    return _resolved_base(cfg)


def require(*modules: str, extra: str = "train") -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"this command needs {', '.join(missing)}: pip install 'amigo-burst[{extra}]'")


def quiet() -> None:
    """The answer, not the libraries' chatter: no weight-loading bars, deprecation notes or
    bitsandbytes' optional-kernel notice on the terminal."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_tokenizer(sm: StageModel, base: str):
    """The stage's tokenizer and chat template (train/loader.py: saved with the adapter by training, else
    the base's with the template training gives it)."""
    from train.loader import load_tokenizer as loader_tokenizer
    from train.schema import TrainInputError

    try:
        tok, _ = loader_tokenizer(base, sm.adapter, training_template=True)
    except TrainInputError as e:
        raise UserError(str(e)) from None
    if not tok.chat_template:
        raise UserError(f"{sm.adapter}: the tokenizer has no chat template")
    tok.padding_side = "right"  # one prompt at a time here
    return tok


def load(cfg: AmigoConfig, sm: StageModel, device: str = "auto"):
    """(model, tokenizer, device): base + adapter in eval mode, by train/loader.py's rules (the method the
    stage trained with; on a GPU too small for a LoRA chain's bf16 base, NF4; the CPU without one)."""
    require("torch", "transformers", "peft")
    quiet()
    from train.loader import load as load_model
    from train.schema import TrainInputError

    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device {device}: auto, cpu or cuda")
    try:
        model, _, plan = load_model(local_base(cfg, sm), sm.adapter, sm.method, device, training_template=True)
    except TrainInputError as e:
        raise UserError(str(e)) from None
    return model, load_tokenizer(sm, local_base(cfg, sm)), plan.device


def chat_ids(tok, prompt: str, system: str | None = None):
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    # the template writes the BOS token itself: do not add a second one
    return tok(text, return_tensors="pt", add_special_tokens=False)


def check_sampling(max_new_tokens: int, temperature: float) -> None:
    """Before any model loads: a negative or nan temperature is no sampling setting (it printed nothing)."""
    import math

    if max_new_tokens < 1:
        raise UserError("--max-new-tokens must be >= 1")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise UserError(f"--temperature must be a number >= 0 (0: greedy), got {temperature}")


def try_prompt(cfg: AmigoConfig, sm: StageModel, prompt: str, *, max_new_tokens: int = 256,
               temperature: float = 0.0, system: str | None = None, device: str = "auto", out=None) -> str:
    """Generate an answer through the stage's chat template, streaming tokens to `out` (stdout)."""
    import sys

    import torch
    from transformers import TextStreamer

    if not prompt.strip():
        raise UserError("the prompt is empty")
    check_sampling(max_new_tokens, temperature)
    model, tok, _ = load(cfg, sm, device)
    enc = {k: v.to(model.device) for k, v in chat_ids(tok, prompt, system).items()}
    out = out or sys.stdout

    class _Out(TextStreamer):  # TextStreamer prints to stdout; `out` lets tests and pipes catch it
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            out.write(text + ("\n" if stream_end else ""))
            out.flush()

    streamer = _Out(tok, skip_prompt=True, skip_special_tokens=True)
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else \
        {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    with torch.inference_mode():
        ids = model.generate(**enc, max_new_tokens=max_new_tokens, streamer=streamer,
                             pad_token_id=tok.pad_token_id, **sampling)
    return tok.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
