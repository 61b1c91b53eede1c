"""Will it fit, how fast, how long, how much: a pure estimator for LoRA / QLoRA fine-tuning.

    estimate(load_arch("llama-3.1-8b"), load_gpu("H100"), Workload("lora", 2048, 4)) -> Estimate

Everything here is arithmetic over data files (data/models.csv, data/gpus.csv);
no torch, no I/O beyond reading those tables and a user's config.json.

Memory (bytes, one GPU, one micro-batch of T = B x S tokens; x2 sequences for DPO):
  weights     lora: 2 B/param (bf16).  qlora: the decoder's linear layers in NF4 =
              4 bit + 8-bit absmax per 64-block + fp32 per 256 absmax (double quant)
              = 4.127 bit = 0.516 B/param; embeddings, lm_head, norms stay bf16 (2 B).
  lora        16 B per adapter param: fp32 weight 4 + fp32 grad 4 + Adam m 4 + v 4.
  activations with checkpointing: each layer's input (T x H x 2 B) for all L layers,
              plus one layer recomputed during its backward; without: all L layers.
  loss        lm_head="fused" (what amigo's trainers run: TRL 1.16's SFTTrainer.compute_loss and
              DPOTrainer._compute_loss call the model with fused_lm_head=True, trl/trainer/
              utils.py add_fused_lm_head -> trl/kernels/chunked_logprob.py): the head is
              projected in [min(T, 4096), 32768] tiles folded into online-logsumexp statistics;
              the full [T, V] logits never exist. On CUDA (Triton folds in place): one bf16
              tile 4096 x 32768 x 2 B = 256 MiB + per token 8h + 28 B (the hidden rows saved
              for backward 2h, their fp32 gradient 4h and its cast 2h, seven fp32 statistics).
              On the CPU (torch folds a whole tile): ~8 fp32 tiles of min(T,4096) x min(V,32768).
              lm_head="full" (a plain loop, `model(..., labels=)`): T x V x 14 B: bf16 logits 2
              + fp32 upcast 4 + fp32 log-softmax kept for backward 4 + its fp32 gradient 4
              (fp32 models: 16 B).  Measured on this CPU (bench/logits_memory.py, tiny shape,
              V 131,072, 1,024 tokens): full 2,048 MiB = 16.0 B x T x V; fused 1,025 MiB, the
              same at V 262,144 (1,054 MiB) and 2x at 2x the tokens; SFTTrainer never calls
              lm_head's forward (0 calls in 2 steps).
  + CUDA context (gpus.csv) + 8% caching-allocator margin on top of the allocated peak.
  + DDP (gpus > 1): one gradient bucket copy of the LoRA gradients, 4 B per adapter param.

Anchor (issue 8, H100, Llama-3.1-8B LoRA bf16, seq 2048 x 4, checkpointing, a plain loop:
lm_head="full"): measured 31.3 GiB peak allocated; this model: 14.96 weights + 0.62 LoRA
+ 2.00 checkpoints + 13.69 logits = 31.3 GiB.  Through TRL the same run's loss is 0.26 GiB.

Padding: without flash-attn (not installed on the targets: train/accel.py pads), each
micro-batch is padded to its longest row, so the peak is the worst batch, micro x seq tokens,
as with packing; only speed differs (PAD_WASTE).  DPO: chosen + rejected in one batch (2 x
the sequences), a reference forward under no_grad (its layer transient, no saved activations).

Speed: FLOPs per token on a 4·N basis (forward 2N + input-gradient backward 2N;
frozen weights get no weight gradient), + 2N for the recompute with checkpointing,
+ causal attention 2·S·d_attn·L per pass, + the small adapter matmuls; divided by
peak bf16 x an efficiency per GPU class and method (gpus.csv, with its source);
the fused head projects the head once more in backward (+2·V·h per token).
Weight reads per pass are a bandwidth floor (roofline max), and QLoRA's NF4
dequantisation is an extra bandwidth term: every pass reads 0.52 B, writes 2 B and
the GEMM re-reads 2 B per quantised weight.

Several GPUs (DDP through torchrun, train/run.sh): tokens/s x n x DDP_SCALING^log2(n).
DDP_SCALING = 0.9 per doubling, an assumption: PyTorch's DDP overlaps the gradient
all-reduce with backward and scales near-linearly even for full-model gradients (Li et al.,
"PyTorch Distributed: Experiences on Accelerating Data Parallel Training", VLDB 2020,
arXiv:2006.15704); a LoRA all-reduce is small (12B, r 16: 57M fp32 grads = 228 MB once per
optimizer step, ~20 ms at 25 GB/s, against steps of seconds), so the loss is mostly ranks
waiting for the slowest padded batch and data loading.

JSON keys of Estimate.to_dict() are stable (README documents them): fits,
peak_vram_gib, tokens_per_s, hours, usd, calibrated, plus the breakdown.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from amigo_burst.errors import UserError
from amigo_burst.planning import parts as P
from amigo_burst.planning.hardware import ALL_LINEAR, GpuSpec, ModelArch, model_table
from amigo_burst.planning.parts import LOCAL_STARTUP_S, SetupCost, StageExtras  # noqa: F401 - re-exported

GiB = 2**30

# NF4 with double quantisation (bitsandbytes defaults of QLoRA, blocksize 64):
# 4 bit code + 8 bit absmax / 64 + 32 bit second-level constant / (64 x 256) = 4.127 bit.
NF4_BYTES = (4 + 8 / 64 + 32 / (64 * 256)) / 8  # 0.5159 B/param
LORA_STATE_BYTES = 4 + 4 + 4 + 4  # fp32 adapter weight + grad + Adam m + Adam v
LOGIT_BYTES = 2 + 4 + 4 + 4  # bf16 logits, fp32 upcast, fp32 log-softmax, its fp32 grad
ALLOCATOR_MARGIN = 0.08  # reserved / allocated of PyTorch's caching allocator ~1.05-1.10
BW_EFFICIENCY = 0.8  # streaming kernels reach ~80% of datasheet bandwidth
# Without packing, padding to the longest row of a micro-batch wastes compute on pad
# tokens; assumed 25% at micro-batch > 1 (none at micro-batch 1).
PAD_WASTE = 0.25
DDP_SCALING = 0.9  # throughput kept per doubling of GPUs (module docstring: source and arithmetic)
# TRL's fused head (trl/kernels/chunked_logprob.py): TOKEN_CHUNK_SIZE x _CHUNKED_LOGPROB_CHUNK_SIZE tiles
LOSS_TILE_TOKENS, LOSS_TILE_VOCAB = 4096, 32768
CPU_LOSS_TILES = 8  # fp32 tile-sized temporaries the torch (non-Triton) fold holds at once (measured)


@dataclass(frozen=True)
class Workload:
    method: str = "qlora"  # lora | qlora
    seq_len: int = 2048
    micro_batch: int = 1
    grad_ckpt: bool = True
    packing: bool = True
    tokens: int | None = None  # training tokens per epoch (DPO: chosen + rejected sequences)
    epochs: float = 1.0
    rank: int = 16
    target_modules: tuple[str, ...] = ALL_LINEAR
    trainer: str = "sft"  # sft | dpo
    lora_dropout: bool = True  # dropout > 0 keeps a mask + dropped input per adapted module
    lm_head: str = "fused"  # fused: TRL's chunked log-probs (what amigo runs) | full: a plain loop's logits
    gpus: int = 1  # data-parallel GPUs (DDP): per-GPU memory, total tokens/s

    def __post_init__(self) -> None:
        if self.method not in ("lora", "qlora"):
            raise UserError(f"unknown method '{self.method}': choose lora or qlora")
        if self.trainer not in ("sft", "dpo"):
            raise UserError(f"unknown trainer '{self.trainer}': choose sft or dpo")
        if self.lm_head not in ("fused", "full"):
            raise UserError(f"unknown lm_head '{self.lm_head}': choose fused or full")
        for name in ("seq_len", "micro_batch", "rank", "gpus"):
            if getattr(self, name) < 1:
                raise UserError(f"{name.replace('_', '-')} must be >= 1")
        if self.tokens is not None and self.tokens < 0:
            raise UserError("tokens must be >= 0")
        if not (math.isfinite(self.epochs) and self.epochs > 0):  # nan compares false both ways: not "$nan"
            raise UserError(f"epochs must be a number > 0 (got {self.epochs})")


@dataclass(frozen=True)
class Correction:
    """Measured / estimated ratios for one calibration key (calibration_key), from calibration.py."""

    tokens_per_s: float = 1.0
    peak: float = 1.0
    runs: int = 0
    mem_runs: int = 0
    peak_spread: float = 0.0  # the largest measured peak ratio over `peak`, minus 1: the error left


SEQ_BAND_FLOOR = 2048  # sequences up to 2k share a band: below it the step is dominated by the same weights


def seq_band(seq_len: int) -> int:
    """The sequence-length band a calibration applies to: the next power of two, at least 2048
    (2048 holds everything up to 2k, 4096 holds 2,049-4,096, 8192 the next)."""
    return max(SEQ_BAND_FLOOR, 1 << max(0, math.ceil(math.log2(max(seq_len, 1)))))


def calibration_key(gpu: str, method: str, trainer: str = "sft", seq_len: int = 2048, gpus: int = 1) -> tuple:
    """What a measured run calibrates: the same GPU class, method, trainer, sequence band and GPU count.
    SFT and DPO, 2k and 8k rows, one GPU and four differ in speed and memory in ways a single factor
    cannot carry."""
    return (gpu, method, trainer, seq_band(seq_len), max(int(gpus or 1), 1))


# Headroom the plan's micro-batch leaves under the card's memory: peak x (1 + h) <= memory.
# Uncalibrated, h = PEAK_HEADROOM: issue 24's review found this estimator 9% to 25% under the published
# and measured peaks of several LoRA/QLoRA cases; h covers the worst of them. Calibrated from this
# project's own runs on the same key, h = the largest measured/calibrated peak ratio left over
# (Correction.peak_spread), at least CALIBRATED_HEADROOM (one run says nothing about the next batch).
PEAK_HEADROOM = 0.25
CALIBRATED_HEADROOM = 0.05


def headroom(corr: Correction | None) -> float:
    if isinstance(corr, Correction) and corr.mem_runs:
        return max(CALIBRATED_HEADROOM, corr.peak_spread)
    return PEAK_HEADROOM


@dataclass(frozen=True)
class Estimate:
    model: str
    gpu: str
    method: str
    trainer: str
    seq_len: int
    micro_batch: int
    gpu_count: int
    tokens: int | None  # training tokens per epoch the hours are for
    fits: bool
    peak_vram_gib: float  # allocated peak x allocator margin + CUDA context: compare with memory_gib
    peak_alloc_gib: float  # what torch.cuda.max_memory_allocated would report
    memory_gib: float
    tokens_per_s: float
    tokens_per_s_default: float
    peak_alloc_gib_default: float
    flops_per_token: float
    bound: str  # compute | memory
    train_hours: float | None
    setup_hours: float
    hours: float | None
    usd_per_hour: float | None
    usd: float | None
    calibrated: bool
    calibration_runs: int
    calibration: str  # "calibrated from N runs" | "default"
    reason: str  # why it does not fit ("" when it does)
    breakdown_gib: dict = field(default_factory=dict)
    headroom: float = 0.0  # fits: peak_vram_gib x (1 + headroom) <= memory_gib
    parts: dict = field(default_factory=dict)  # hours per named part (planning/parts.py); hours = their sum
    packing: bool = False

    def step_seconds(self, grad_accum: int) -> float:
        """One optimizer step: micro x accum sequences on each GPU, at the estimated rate (rows padded to
        seq_len: the worst step, what a cap must allow)."""
        useful = 1.0 if (self.packing or self.micro_batch == 1) else 1 - PAD_WASTE
        seqs = 2 if self.trainer == "dpo" else 1
        return self.micro_batch * seqs * grad_accum * self.gpu_count * self.seq_len * useful / self.tokens_per_s

    def to_dict(self) -> dict:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, float):
                d[k] = round(v, 4)
        d["breakdown_gib"] = {k: round(v, 4) for k, v in self.breakdown_gib.items()}
        d["parts"] = {k: round(v, 6) for k, v in self.parts.items()}
        return d


# --------------------------------------------------------------------------- the model


def loss_bytes(arch: ModelArch, w: Workload, tokens: int, device: str = "cuda") -> float:
    """Bytes the loss holds at its peak for TOKENS tokens (module docstring: "loss").

    fused, CUDA, Nemo (h 5120) at 8,192 tokens: 256 MiB tile + 8,192 x 40,988 B = 0.57 GiB;
    full: 8,192 x 131,072 x 14 B = 14.0 GiB.
    """
    if w.lm_head == "full":
        return tokens * arch.vocab * (LOGIT_BYTES + (2 if device == "cpu" else 0))  # fp32 model: 4 B logits
    rows = min(tokens, LOSS_TILE_TOKENS)
    if device == "cpu":
        tiles = CPU_LOSS_TILES * rows * min(arch.vocab, LOSS_TILE_VOCAB) * 4
    else:
        tiles = rows * LOSS_TILE_VOCAB * 2  # one bf16 buffer, allocated whole whatever the vocabulary
    return tiles + tokens * (8 * arch.hidden + 28)


def memory_breakdown(arch: ModelArch, w: Workload, device: str = "cuda") -> dict[str, float]:
    """Bytes of each term at the allocated peak (see the module docstring); device "cpu" or "cuda"."""
    seqs = w.micro_batch * (2 if w.trainer == "dpo" else 1)  # DPO: chosen + rejected in one batch
    t = seqs * w.seq_len  # tokens in flight
    h, i, L = arch.hidden, arch.intermediate, arch.layers
    q, kv = arch.heads * arch.head_dim, arch.kv_heads * arch.head_dim
    if w.method == "qlora":
        weights = arch.linear_params * NF4_BYTES + (arch.params - arch.linear_params) * 2
        # bitsandbytes dequantises one weight to bf16 for its matmul: the largest one is transient
        dequant = max(a * b for a, b in arch.modules.values()) * 2
    else:
        weights, dequant = arch.params * 2, 0
    lora = arch.lora_params(w.rank, w.target_modules) * (LORA_STATE_BYTES + (4 if w.gpus > 1 else 0))
    # Saved for backward per token in one decoder layer, bf16 (2 B):
    #   2 RMSNorms: input + output         8h
    #   q, k, v after RoPE (for SDPA bwd)   2(q + 2kv);  attention output (o_proj input) 2q
    #   SwiGLU: gate, up, silu(gate), product (down_proj input)   8i
    #   LoRA dropout per adapted module: bool mask 1 B + dropped input 2 B of its input width
    mods = arch.modules
    per_layer = 8 * h + 2 * (q + 2 * kv) + 2 * q + 8 * i
    if w.lora_dropout:
        per_layer += sum(3 * mods[m][0] for m in w.target_modules)
    per_layer += sum(2 * w.rank for _ in w.target_modules)  # adapter intermediates (r wide)
    # backward of one layer also holds gradients: hidden-wide in/out (2 x 2h) and MLP-wide (2 x 2i)
    layer_peak = t * (per_layer + 4 * h + 4 * i)
    if w.grad_ckpt:
        saved = L * t * h * 2  # each layer's input, bf16
        act = saved + layer_peak
    else:
        saved = L * t * per_layer
        act = saved + t * (4 * h + 4 * i)
    logits = loss_bytes(arch, w, t, device)
    # the loss peak and the recomputed-layer peak come one after the other, not together
    transient = max(logits, (layer_peak if w.grad_ckpt else 0) + dequant)
    return {"weights": weights, "lora_states": lora, "checkpoints" if w.grad_ckpt else "activations": saved,
            "transient": transient, "logits": logits, "layer": layer_peak if w.grad_ckpt else act - saved}


def forward_flops(arch: ModelArch, w: Workload) -> float:
    """FLOPs of one forward pass per token: the matmuls, causal attention and the adapters."""
    attn = 2 * w.seq_len * arch.heads * arch.head_dim * arch.layers  # QK^T + AV, 2 FLOP/MAC, causal half
    return 2 * arch.matmul_params + attn + 2 * arch.lora_params(w.rank, w.target_modules)


def flops_per_token(arch: ModelArch, w: Workload) -> float:
    """Training FLOPs per token.  8B, S=2048, checkpointing: 2 x 15.63 + 16.25 = 47.5 GFLOP."""
    n = arch.matmul_params
    lora = arch.lora_params(w.rank, w.target_modules)
    attn = 2 * w.seq_len * arch.heads * arch.head_dim * arch.layers  # QK^T + AV, 2 FLOP/MAC, causal half
    fwd = forward_flops(arch, w)
    bwd = 2 * n + 2 * attn + 4 * lora  # input grads through frozen weights; adapter grads
    train = fwd * (2 if w.grad_ckpt else 1) + bwd
    if w.lm_head == "fused":
        train += 2 * arch.vocab * arch.hidden  # the backward projects each head tile again
    if w.trainer == "dpo":
        train += fwd  # reference model forward (adapter disabled) on the same tokens
    return float(train)


def _step_seconds(arch: ModelArch, gpu: GpuSpec, w: Workload) -> tuple[float, str, int]:
    seqs = w.micro_batch * (2 if w.trainer == "dpo" else 1)
    t = seqs * w.seq_len
    compute = t * flops_per_token(arch, w) / (gpu.bf16_tflops * 1e12 * gpu.efficiency(w.method))
    passes = (3 if w.grad_ckpt else 2) + (1 if w.trainer == "dpo" else 0)  # fwd, recompute, bwd, ref
    bw = gpu.bandwidth_gbs * 1e9 * BW_EFFICIENCY
    weight_read = passes * arch.matmul_params * 2 / bw  # a GEMM reads its bf16 weight once per pass
    step = max(compute, weight_read)
    bound = "compute" if compute >= weight_read else "memory"
    if w.method == "qlora":
        # dequantise: read NF4 (0.52 B) + write bf16 (2 B), then the GEMM reads it again (2 B)
        step += passes * arch.linear_params * (NF4_BYTES + 2 + 2) / bw
    # Eager overhead is paid per module call, and module calls run in Python in forward passes
    # (backward runs in autograd's C++ engine): checkpointing pays it twice, DPO's reference once more.
    # Tiny models on CPU are almost all overhead (measured here: ~8 ms per forward at 0.2M params).
    fwd_passes = (2 if w.grad_ckpt else 1) + (1 if w.trainer == "dpo" else 0)
    return step + fwd_passes * gpu.forward_overhead_ms / 1000, bound, t


def estimate(arch: ModelArch, gpu: GpuSpec, workload: Workload, calibration: dict | None = None, *,
             usd_per_hour: float | None = None, setup: SetupCost | None = None,
             extras: StageExtras | None = None) -> Estimate:
    """fits (with headroom) / peak VRAM / tokens per second / hours (the sum of the named parts, parts.py) / USD
    for one (model, GPU, workload)."""
    w = workload
    parts = memory_breakdown(arch, w, "cpu" if gpu.kind == "cpu" else "cuda")
    alloc_default = (parts["weights"] + parts["lora_states"] + parts.get("checkpoints", parts.get("activations", 0))
                     + parts["transient"]) / GiB
    step_s, bound, t = _step_seconds(arch, gpu, w)
    # padding waste (no packing, micro-batch > 1): the step also computes on pad tokens
    useful = 1.0 if (w.packing or w.micro_batch == 1) else 1 - PAD_WASTE
    # n GPUs: each runs the same step on its own micro-batch; DDP_SCALING per doubling
    tps_default = t * useful / step_s * w.gpus * DDP_SCALING ** math.log2(w.gpus)

    corr = (calibration or {}).get(calibration_key(gpu.name, w.method, w.trainer, w.seq_len, w.gpus))
    if isinstance(corr, Correction) and (corr.runs or corr.mem_runs):
        tps, n = tps_default * corr.tokens_per_s, max(corr.runs, corr.mem_runs)
        alloc = alloc_default * (corr.peak if corr.mem_runs else 1.0)
    else:
        tps, alloc, n = tps_default, alloc_default, 0
    peak = alloc * (1 + ALLOCATOR_MARGIN) + gpu.context_gib
    room = headroom(corr)
    fits = peak * (1 + room) <= gpu.memory_gib
    reason = "" if fits else (
        f"needs {peak:.1f} GiB + {room:.0%} headroom of {gpu.memory_gib:g} (weights {parts['weights'] / GiB:.1f}, "
        f"activations+logits {(alloc - parts['weights'] / GiB - parts['lora_states'] / GiB):.1f})")

    setup = setup or SetupCost()
    secs = P.seconds(_shape(arch, gpu, w, tps, parts["weights"]), setup, extras or StageExtras())
    setup_h = (secs["setup"] + secs["download"]) / 3600
    train_h = hours = usd = None
    if w.tokens is not None:
        train_h = secs["training"] / 3600
        hours = sum(secs.values()) / 3600
        usd = hours * usd_per_hour if usd_per_hour is not None else None
    return Estimate(
        model=arch.name, gpu=gpu.name, method=w.method, trainer=w.trainer, seq_len=w.seq_len,
        micro_batch=w.micro_batch, gpu_count=w.gpus, tokens=w.tokens, fits=fits, peak_vram_gib=peak, peak_alloc_gib=alloc, memory_gib=gpu.memory_gib,
        tokens_per_s=tps, tokens_per_s_default=tps_default, peak_alloc_gib_default=alloc_default,
        flops_per_token=flops_per_token(arch, w), bound=bound, train_hours=train_h, setup_hours=setup_h,
        hours=hours, usd_per_hour=usd_per_hour, usd=usd, calibrated=n > 0, calibration_runs=n,
        calibration=f"calibrated from {n} run{'s' if n != 1 else ''}" if n else "default", reason=reason,
        breakdown_gib={k: v / GiB for k, v in parts.items()}, headroom=room,
        parts={k: v / 3600 for k, v in secs.items()} if w.tokens is not None else {}, packing=w.packing,
    )


def _shape(arch: ModelArch, gpu: GpuSpec, w: Workload, tps: float, weight_bytes: float) -> P.Shape:
    share = forward_flops(arch, w) * (2 if w.trainer == "dpo" else 1) / flops_per_token(arch, w)
    return P.Shape(params=arch.params, weight_bytes=weight_bytes, lora_params=arch.lora_params(w.rank, w.target_modules),
                   layers=arch.layers, tokens=w.tokens, epochs=w.epochs, seq_len=w.seq_len, micro_batch=w.micro_batch,
                   gpus=w.gpus, packing=w.packing, tokens_per_s=tps, forward_share=share,
                   bandwidth_bps=gpu.bandwidth_gbs * 1e9 * BW_EFFICIENCY,
                   forward_overhead_s=gpu.forward_overhead_ms / 1000)


def max_micro_batch(arch: ModelArch, gpu: GpuSpec, w: Workload, calibration: dict | None = None,
                    limit: int = 64) -> int:
    """Largest power-of-two micro-batch that fits (0: not even 1)."""
    best, b = 0, 1
    while b <= limit and estimate(arch, gpu, replace(w, micro_batch=b), calibration).fits:
        best, b = b, b * 2
    return best


def max_seq_len(arch: ModelArch, gpu: GpuSpec, w: Workload, calibration: dict | None = None,
                lo: int = 128, hi: int = 131072) -> int:
    """Largest sequence length (multiple of 128) that fits at the workload's micro-batch (0: none >= lo)."""
    if not estimate(arch, gpu, replace(w, seq_len=lo), calibration).fits:
        return 0
    while hi - lo > 128:  # fits(lo) holds; peak grows with seq_len
        mid = (lo + hi) // 2 // 128 * 128
        lo, hi = (mid, hi) if estimate(arch, gpu, replace(w, seq_len=mid), calibration).fits else (lo, mid)
    return hi if estimate(arch, gpu, replace(w, seq_len=hi), calibration).fits else lo


@dataclass(frozen=True)
class LargestFit:
    model: str | None  # largest preset (by params) that fits at the workload's seq_len
    model_params: int
    seq_len: int  # largest seq_len for the given arch (0: its weights alone do not fit)
    method: str


def largest_fit(arch: ModelArch, gpu: GpuSpec, w: Workload, calibration: dict | None = None) -> LargestFit:
    """What would fit this GPU: the biggest preset model at w.seq_len, and the longest sequence for `arch`."""
    fitting = [a for a in model_table().values() if a.name != "tiny" and estimate(a, gpu, w, calibration).fits]
    top = max(fitting, key=lambda a: a.params, default=None)
    return LargestFit(top.name if top else None, top.params if top else 0,
                      max_seq_len(arch, gpu, w, calibration), w.method)
