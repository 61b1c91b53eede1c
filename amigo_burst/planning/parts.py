"""The named parts of a stage's time: everything a machine spends from the launch to the end of the stage.

    setup        provisioning (a pod/VM coming up) + train/setup.sh (the training stack installed);
                 on the laptop, the start-up of `python -m train` (imports, model load)
    download     the base model, bf16 safetensors (2 B/param), at download_gbit_s (cloud only)
    inputs       the stage's inputs onto the machine: the dataset and previous adapter fetched, and a
                 hub dataset the target reads and tokenizes itself (train/prepare.py, dataset.prepare)
    training     the stage's tokens x epochs at the steady tokens/s (calibrated from measured step times)
    validation   the held-out loss every eval_steps and at the end: forward passes only
    checkpoints  one every save_steps and every save_minutes, plus the adapter at the end, to local disk
    benchmark    HumanEval after the stage (train/run.sh): the model loaded again, greedy generation of
                 up to max_new_tokens per answer in batches of 8, each answer's tests in the sandbox

Each part is seconds; the estimate's hours are their sum (Estimate.parts). Pure: no I/O.
Assumed constants say so; measured ones say where.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from amigo_burst.errors import UserError

PROVISION_S = 300.0  # a cloud pod/VM from request to SSH: ~3-5 min on RunPod / Vast / Lambda (assumed)
SETUP_S = 240.0  # train/setup.sh on a fresh machine: torch + the pinned stack from PyPI (assumed)
LOCAL_STARTUP_S = 30.0  # the laptop: worker, `python -m train` imports, model load (issue 15's demo runs)
# train/prepare.py's `fit` (chat template rendered + tokenized, one process), measured on this 2-core
# machine: 411k tokens/s over stage-4-shaped rows (3,700 words each) with the built-in byte-level BPE
PREPARE_TOKENS_PER_S = 400_000
BYTES_PER_TOKEN = 3.6  # BPE on code and English: ~3.5-4 bytes of source text per token (planner.stage_tokens)
DISK_WRITE_BPS = 1e9  # a checkpoint to the machine's local NVMe/SSD (assumed)
DISK_READ_BPS = 2e9  # the base model read back from the machine's cache for the benchmark (assumed)
SAVE_FIXED_S = 2.0  # per checkpoint: trainer state, RNG, scheduler, the tokenizer, fsync (assumed)
CKPT_BYTES_PER_LORA_PARAM = 4 + 4 + 4  # fp32 adapter weight + Adam m and v (fp32; 8-bit AdamW is smaller)
HUMANEVAL_PROBLEMS = 164
BENCH_BATCH = 8  # train/humaneval.py --batch-size default
BENCH_EXEC_S = 1.0  # per problem: its tests in a fresh sandboxed process (assumed; a timeout costs more)
# eager PyTorch + PEFT's unmerged LoRA: ~30 kernel launches per decoder layer and token at ~10 us each
DECODE_LAYER_OVERHEAD_S = 0.0003


@dataclass(frozen=True)
class SetupCost:
    """Time a run pays for before its first step (billed like training time)."""

    provision_s: float = 0.0  # cloud: ~3-5 min for a pod/VM to come up
    setup_s: float = 0.0  # pip install of the training stack (train/setup.sh)
    download_gbit_s: float = 1.0  # model and input download bandwidth; bf16 safetensors = 2 B/param
    download: bool = False  # False: the model is already cached there (the laptop)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.download_gbit_s) and self.download_gbit_s > 0):  # 0: "ZeroDivisionError"
            raise UserError(f"download-gbps must be a number > 0 (got {self.download_gbit_s})")

    @classmethod
    def local(cls) -> SetupCost:
        return cls(setup_s=LOCAL_STARTUP_S)

    @classmethod
    def cloud(cls, download_gbit_s: float = 1.0) -> SetupCost:
        return cls(provision_s=PROVISION_S, setup_s=SETUP_S, download_gbit_s=download_gbit_s, download=True)


@dataclass(frozen=True)
class StageExtras:
    """What a stage does besides its training steps (planner.stage_extras fills it from amigo.toml,
    train/configs and [eval]); the defaults add nothing."""

    rows: int | None = None  # training rows (DPO: pairs): padded steps count rows, not tokens
    grad_accum: int = 1
    fetch_bytes: float = 0.0  # over the network: hub rows read, the prepared dataset and previous adapter fetched
    prepare_bytes: float = 0.0  # source text tokenized to prepare the stage on this machine (train/prepare.py)
    eval_fraction: float = 0.0
    eval_max_rows: int = 0
    eval_steps: int = 0
    save_steps: int = 0
    save_minutes: float = 0.0
    benchmark_problems: int = 0  # 0: no benchmark
    benchmark_new_tokens: int = 512


@dataclass(frozen=True)
class Shape:
    """The facts of one estimate the parts need (estimate.py fills it)."""

    params: float  # all parameters
    weight_bytes: float  # the frozen weights as held in memory (bf16, or NF4 for QLoRA)
    lora_params: float
    layers: int
    tokens: float | None  # training tokens per epoch
    epochs: float
    seq_len: int
    micro_batch: int
    gpus: int
    packing: bool
    tokens_per_s: float
    forward_share: float  # forward FLOPs / training FLOPs per token: what an evaluation costs
    bandwidth_bps: float  # the GPU's usable memory bandwidth
    forward_overhead_s: float


def optimizer_steps(s: Shape, x: StageExtras) -> int:
    """Steps of the stage: packed, tokens / (seq x micro x accum x GPUs); padded, rows / (micro x accum x GPUs)."""
    per_step = s.micro_batch * max(x.grad_accum, 1) * max(s.gpus, 1)
    if s.tokens is None:
        return 0
    rows = x.rows if (x.rows and not s.packing) else s.tokens / max(s.seq_len, 1)
    return max(1, math.ceil(rows * s.epochs / per_step))


def held_out_tokens(s: Shape, x: StageExtras) -> float:
    """Tokens of the held-out rows (train/heldout.py: eval_fraction of the rows, at most eval_max_rows)."""
    if not (s.tokens and x.rows and x.eval_fraction and x.eval_max_rows) or x.rows < 10:
        return 0.0
    held = min(x.eval_max_rows, math.floor(x.rows * x.eval_fraction))
    return held * s.tokens / x.rows


def seconds(s: Shape, setup: SetupCost, x: StageExtras) -> dict[str, float]:
    """{part: seconds} in the order the machine spends them."""
    bps = setup.download_gbit_s * 1e9 / 8
    train_s = (s.tokens * s.epochs / s.tokens_per_s) if s.tokens is not None else 0.0
    steps = optimizer_steps(s, x)
    evals = (steps // x.eval_steps + 1) if (x.eval_steps and held_out_tokens(s, x)) else 0
    saves = ((steps // x.save_steps if x.save_steps else 0)
             + (int(train_s // (x.save_minutes * 60)) if x.save_minutes else 0) + 1) if s.tokens else 0
    return {
        "setup": setup.provision_s + setup.setup_s,
        "download": s.params * 2 / bps if setup.download else 0.0,
        "inputs": x.fetch_bytes / bps + x.prepare_bytes / BYTES_PER_TOKEN / PREPARE_TOKENS_PER_S,
        "training": train_s,
        "validation": evals * held_out_tokens(s, x) * s.forward_share / s.tokens_per_s,
        "checkpoints": saves * (SAVE_FIXED_S + s.lora_params * CKPT_BYTES_PER_LORA_PARAM / DISK_WRITE_BPS),
        "benchmark": benchmark_s(s, x),
    }


def benchmark_s(s: Shape, x: StageExtras) -> float:
    """Load the model again, then per batch of 8 problems max_new_tokens decode steps, each reading every
    weight once (memory-bound at these batch sizes) plus the per-layer launch overhead; then the tests."""
    if not x.benchmark_problems:
        return 0.0
    load = s.params * 2 / DISK_READ_BPS
    step = s.weight_bytes / s.bandwidth_bps + s.layers * DECODE_LAYER_OVERHEAD_S + s.forward_overhead_s
    batches = math.ceil(x.benchmark_problems / BENCH_BATCH)
    return load + batches * x.benchmark_new_tokens * step + x.benchmark_problems * BENCH_EXEC_S


# A probe's cap: PROBE_CAP_FACTOR x its estimated download and steps, at least PROBE_CAP_MIN_S. Why 2x: the
# estimate of a step can be that far off before calibration (issue 24: one measured case a third over).
PROBE_CAP_FACTOR = 2.0
PROBE_CAP_MIN_S = 300.0


def probe_rows(micro_batch: int, grad_accum: int, gpus: int, steps: int) -> int:
    """Rows a probe of STEPS optimizer steps trains on: one step is micro x accum sequences on each GPU."""
    return max(1, micro_batch) * max(1, grad_accum) * max(1, gpus) * steps


def probe_plan(e, grad_accum: int, steps: int, rows_fraction: float) -> dict:
    """What a probe of STEPS steps costs before it starts, from the stage's estimate E (an Estimate): its
    setup and download as the stage's, the inputs for its rows only (rows_fraction of the stage's), the
    steps at the estimated step time; no validation, no benchmark. Seconds per part, the total, the cap
    the trainer gets (--max-runtime-s counts from its start: the download and the steps), and dollars."""
    p = {k: v * 3600 for k, v in (e.parts or {}).items()}
    step_s = e.step_seconds(grad_accum)
    secs = {"setup": p.get("setup", 0.0), "download": p.get("download", 0.0),
            "inputs": p.get("inputs", 0.0) * min(1.0, rows_fraction), "steps": steps * step_s}
    total = sum(secs.values())
    cap = max(PROBE_CAP_MIN_S, PROBE_CAP_FACTOR * (secs["download"] + secs["steps"]))
    usd = total / 3600 * e.usd_per_hour if e.usd_per_hour is not None else None
    return {"seconds": secs, "total_s": total, "step_s": step_s, "cap_s": int(cap), "usd": usd}
