"""The model and GPU tables: data/models.csv -> ModelArch, data/gpus.csv -> GpuSpec, and their loaders.

    load_arch("llama-3.1-8b"), load_gpu("H100"), gpu_for_accelerator("runpod", "H100")

No torch, no I/O beyond reading those tables and a user's config.json.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from amigo_burst import clouds
from amigo_burst.errors import UserError

DATA = Path(__file__).parent / "data"
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ModelArch:
    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool = False
    stated_params: int = 0  # from the model card; 0: use the shape
    source: str = ""

    @property
    def modules(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer in one decoder block (Llama/Qwen/Gemma/Mistral shape)."""
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def linear_params(self) -> int:
        """Decoder linear weights: the part QLoRA quantises.  8B: 32 x 218.1M = 6.98B."""
        return self.layers * sum(a * b for a, b in self.modules.values())

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    @property
    def params(self) -> int:
        shape = self.linear_params + self.embedding_params + (2 * self.layers + 1) * self.hidden
        return max(self.stated_params, shape)

    @property
    def matmul_params(self) -> int:
        """Weights that take part in a matmul per token: decoder linears + lm_head (lookups are free)."""
        return self.linear_params + self.vocab * self.hidden

    def lora_params(self, rank: int, targets: tuple[str, ...] = ALL_LINEAR) -> int:
        """r x (in + out) per adapted module.  8B, r=16, all 7: 32 x 1.31M = 41.9M."""
        mods = self.modules
        unknown = [t for t in targets if t not in mods]
        if unknown:
            raise UserError(f"unknown LoRA target module(s) {', '.join(unknown)}: choose from {', '.join(mods)}")
        return self.layers * sum(rank * (mods[t][0] + mods[t][1]) for t in targets)


@dataclass(frozen=True)
class GpuSpec:
    name: str
    memory_gib: float
    bf16_tflops: float
    bandwidth_gbs: float
    kind: str = "datacenter"  # laptop | consumer | datacenter | cpu
    board_power_w: float = 0.0
    context_gib: float = 0.5
    forward_overhead_ms: float = 2.5  # eager per-forward-pass cost (Python module calls, launches)
    eff_lora: float = 0.3
    eff_qlora: float = 0.28
    aliases: tuple[str, ...] = ()
    source: str = ""
    efficiency_source: str = ""

    def efficiency(self, method: str) -> float:
        return self.eff_qlora if method == "qlora" else self.eff_lora


# --------------------------------------------------------------------------- tables


def _bool(s: str) -> bool:
    return s.strip().lower() in ("1", "true", "yes")


@lru_cache(maxsize=1)
def model_table() -> dict[str, ModelArch]:
    out = {}
    with open(DATA / "models.csv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            out[r["name"]] = ModelArch(
                r["name"], int(r["layers"]), int(r["hidden"]), int(r["heads"]), int(r["kv_heads"]),
                int(r["head_dim"]), int(r["intermediate"]), int(r["vocab"]), _bool(r["tied_embeddings"]),
                int(r["params"]), r["source"])
    return out


@lru_cache(maxsize=1)
def _hub_ids() -> dict[str, str]:
    with open(DATA / "models.csv", newline="", encoding="utf-8") as f:
        return {r["hub_id"].lower(): r["name"] for r in csv.DictReader(f)}


@lru_cache(maxsize=1)
def gpu_table() -> dict[str, GpuSpec]:
    out = {}
    with open(DATA / "gpus.csv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            out[r["name"]] = GpuSpec(
                r["name"], float(r["memory_gib"]), float(r["bf16_tflops"]), float(r["bandwidth_gbs"]),
                r["kind"], float(r["board_power_w"]), float(r["context_gib"]), float(r["forward_overhead_ms"]),
                float(r["eff_lora"]), float(r["eff_qlora"]),
                tuple(a.strip() for a in r["aliases"].split(";") if a.strip()), r["source"], r["efficiency_source"])
    return out


def arch_from_config(cfg: dict, name: str, source: str) -> ModelArch:
    """A transformers config.json -> ModelArch (multimodal configs: their text_config)."""
    top = cfg
    if isinstance(cfg.get("text_config"), dict):
        cfg = {**cfg["text_config"], "model_type": cfg["text_config"].get("model_type", top.get("model_type", ""))}
    try:
        hidden = int(cfg["hidden_size"])
        heads = int(cfg["num_attention_heads"])
        arch = ModelArch(
            name=name,
            layers=int(cfg["num_hidden_layers"]),
            hidden=hidden,
            heads=heads,
            kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            intermediate=int(cfg["intermediate_size"]),
            vocab=int(cfg["vocab_size"]),
            # transformers' own default is tied; Llama/Qwen2/Mistral configs set it False
            tied_embeddings=bool(cfg.get("tie_word_embeddings", top.get("tie_word_embeddings", True))),
            source=source,
        )
    except KeyError as e:
        raise UserError(f"{source}: not a decoder config.json (missing {e.args[0]})") from None
    except (TypeError, ValueError) as e:
        raise UserError(f"{source}: bad value in config.json ({e})") from None
    if min(arch.layers, arch.hidden, arch.heads, arch.kv_heads, arch.head_dim, arch.intermediate, arch.vocab) < 1:
        raise UserError(f"{source}: config.json sizes must be positive")
    return arch


def load_arch(name_or_path: str | Path) -> ModelArch:
    """A preset name (models.csv), its hub id, or a path to a config.json (or the folder holding one)."""
    key = str(name_or_path).strip()
    table = model_table()
    if key.lower() in {n.lower() for n in table}:
        return next(a for n, a in table.items() if n.lower() == key.lower())
    if key.lower() in _hub_ids():
        return table[_hub_ids()[key.lower()]]
    p = Path(key).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise UserError(f"{p}: no config.json in this folder")
        p = p / "config.json"
    if p.is_file():
        try:
            cfg = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"{p}: not valid JSON ({e.__class__.__name__})") from None
        if not isinstance(cfg, dict):
            raise UserError(f"{p}: expected a JSON object")
        return arch_from_config(cfg, p.parent.name or p.stem, str(p))
    raise UserError(f"unknown model '{key}': choose one of {', '.join(table)} or give a path to a config.json")


def load_gpu(name: str) -> GpuSpec:
    """A GPU by its table name, a SkyPilot accelerator name or an alias (case-insensitive)."""
    key = str(name).strip().lower()
    for g in gpu_table().values():
        if key == g.name.lower() or key in (a.lower() for a in g.aliases):
            return g
    raise UserError(f"unknown GPU '{name}': choose one of {', '.join(gpu_table())}")


def gpu_class(device_name: str | None) -> str | None:
    """A name as torch reports it ("NVIDIA GeForce RTX 4090", "cpu") -> the table's name, or None."""
    if not device_name:
        return None
    try:
        return load_gpu(device_name).name
    except UserError:
        pass
    s = device_name.lower().replace(" ", "")
    for pattern, name in (("4050", "RTX4050-Laptop"), ("3090", "RTX3090"), ("4090", "RTX4090"), ("5090", "RTX5090"),
                          ("l40s", "L40S"), ("l40", "L40"), ("6000ada", "RTX6000-Ada"), ("a6000", "A6000"),
                          ("a5000", "RTXA5000"), ("a40", "A40"), ("a10080", "A100-80GB"), ("a100", "A100"),
                          ("a10", "A10"), ("l4", "L4"), ("h200", "H200"), ("h100pcie", "H100-PCIe"),
                          ("h100nvl", "H100-NVL"), ("h100", "H100"), ("b200", "B200")):
        if pattern in s:
            return name
    return None


def gpu_for_accelerator(cloud: str | None, accelerator: str | None, memory_gib: float | None = None) -> GpuSpec | None:
    """(cloud, SkyPilot accelerator name[, per-GPU memory]) -> GpuSpec; None when the table has no such
    card (GH200, RTX6000 of Turing: no bf16 tensor cores...).

    A name can mean two cards: Vast's "A100" is 40 or 80 GB, its "H100" the SXM (80 GB) or the
    NVL (94 GB). With the offer's memory, the row of the same family whose memory matches wins.
    """
    if not accelerator:
        return None
    c = clouds.cloud(cloud)
    name = c.gpu_rows.get(accelerator) if c else None  # a cloud's name for another table row
    try:
        row = gpu_table()[name] if name else load_gpu(accelerator)
    except UserError:
        return None
    if memory_gib and abs(row.memory_gib - memory_gib) > 0.1 * memory_gib:
        family = accelerator.split("-")[0].lower()
        same = [g for g in gpu_table().values() if g.name.lower().split("-")[0] == family
                and abs(g.memory_gib - memory_gib) <= 0.1 * memory_gib]
        if same:
            return min(same, key=lambda g: abs(g.memory_gib - memory_gib))
    return row
