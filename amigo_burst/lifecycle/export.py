"""`amigo-burst export`: take a stage's model home as merged safetensors, a GGUF, or an Ollama model.

    merged   PATH/: config, model.safetensors (bf16), tokenizer, chat template — transformers, vLLM
    gguf     PATH.gguf: llama.cpp's own convert_hf_to_gguf.py on the merged folder, then (default
             Q4_K_M) llama.cpp's quantizer through llama-cpp-python's llama_model_quantize
    ollama   PATH/: model.gguf + a Modelfile (FROM, TEMPLATE in Ollama's syntax, stop tokens) + parity.json:
             `ollama create amigo -f PATH/Modelfile`

gguf and ollama are checked against the model they came from before they are placed (`--check N`, 3 by
default; `--no-check`): N HumanEval problems answered by llama.cpp on the GGUF and by the merged model,
with the Modelfile's template and stop tokens (train/parity.py); pass@1 of both and how many answers
differ are printed (and kept in parity.json).

What runs where: the merge holds the dequantized base on the CPU (2 B/param in bf16: ~25 GB of RAM for a
12B) unless a GPU holds it with room (train/loader.py: never a 24 GB base onto the laptop's 6 GB).
A 12B Q4_K_M GGUF is ~7 GB (4.85 bits/weight): on the 6 GB laptop llama.cpp/Ollama offload part of
the layers to the GPU and run the rest on the CPU; an 8B Q4_K_M (~4.9 GB) fits whole.

The converter is not in llama-cpp-python's wheel: it comes from the same release's sdist (which
vendors llama.cpp with convert_hf_to_gguf.py and gguf-py), fetched once with pip into
~/.cache/amigo-burst/, or from a llama.cpp checkout named by AMIGO_LLAMA_CPP. Every output is written
beside PATH and renamed into place: never a half-written export.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from amigo_burst.config import AmigoConfig
from amigo_burst.errors import UserError
from amigo_burst.lifecycle import ollama
from amigo_burst.lifecycle.models import StageModel, load_tokenizer, local_base, quiet, require

FORMATS = ("merged", "gguf", "ollama")
CONVERTER_TYPES = ("bf16", "f16", "q8_0")  # convert_hf_to_gguf.py --outtype writes these itself
QUANTS = ("Q4_K_M", "Q5_K_M", "Q6_K", "Q4_0")  # llama.cpp's quantizer, from the bf16 GGUF
DTYPES = ("bf16", "fp16", "fp32")


@dataclass(kw_only=True)
class ExportOptions:
    fmt: str
    out: Path
    quant: str = "Q4_K_M"
    dtype: str = "bf16"
    force: bool = False
    check: int = 3  # gguf/ollama: HumanEval problems answered by llama.cpp and by the merged model; 0: none
    check_tokens: int = 256  # per answer in that check

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise UserError(f"--format {self.fmt}: one of {', '.join(FORMATS)}")
        if self.quant not in CONVERTER_TYPES + QUANTS:
            raise UserError(f"--quant {self.quant}: one of {', '.join(CONVERTER_TYPES + QUANTS)}")
        if self.dtype not in DTYPES:
            raise UserError(f"--dtype {self.dtype}: one of {', '.join(DTYPES)}")
        if self.fmt == "gguf" and self.out.suffix != ".gguf":
            raise UserError(f"--out {self.out}: a GGUF export is one file: name it *.gguf")
        if self.out.exists() and not self.force:
            raise UserError(f"--out {self.out} exists: remove it or pass --force")
        if self.fmt != "merged" and self.dtype != "bf16":
            raise UserError("--dtype is for --format merged (a GGUF is made from the bf16 merge)")
        if not 0 <= self.check <= 164:
            raise UserError(f"--check {self.check}: 0-164 HumanEval problems (--no-check: none)")


def export(cfg: AmigoConfig, sm: StageModel, opts: ExportOptions, say=print) -> Path:
    if opts.fmt in ("gguf", "ollama"):
        llama_cpp_version()  # no llama-cpp-python: refused before a merge that holds the base in RAM (~25 GB, 12B)
    check_destination(opts.out)
    out = opts.out.resolve()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {opts.out}: cannot write there ({e.strerror or e})") from None
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        work = Path(tmp)
        merged = merge(cfg, sm, work / "merged", opts.dtype, say)
        if opts.fmt == "merged":
            result = merged
        else:
            gguf = to_gguf(merged, work / "model.gguf", opts.quant, say)
            tok = load_tokenizer(sm, local_base(cfg, sm))
            if opts.fmt == "gguf":
                result = gguf
            else:
                result = work / "ollama"
                result.mkdir()
                gguf = result / "model.gguf"
                os.replace(work / "model.gguf", gguf)
                text = ollama.modelfile("./model.gguf", tok, adds_bos(gguf))
                (result / "Modelfile").write_text(text, encoding="utf-8")
            if opts.check:  # before the export is placed: a check that cannot run leaves nothing half-made
                report = parity(merged, gguf, ollama.stop_tokens(tok), opts.check, opts.check_tokens, say)
                if opts.fmt == "ollama":
                    (result / "parity.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
        _place(result, out)
    return out


def check_destination(out: Path) -> None:
    """Where --out will be written, before anything is loaded or merged (/proc/x, /sys/x, a file's
    child): a folder is made and removed in its nearest existing parent. Nothing is left behind."""
    out = out.resolve()
    parent = next((p for p in out.parents if p.exists()), Path("/"))
    if not parent.is_dir():
        raise UserError(f"--out {out}: cannot write there ({parent} is a file, not a folder)")
    try:
        tempfile.TemporaryDirectory(prefix=".amigo-probe-", dir=parent).cleanup()
    except OSError as e:
        raise UserError(f"--out {out}: cannot write in {parent} ({e.strerror or e})") from None


def parity(merged: Path, gguf: Path, stops: list[str], problems: int, max_new_tokens: int, say=print) -> dict:
    """train/parity.py: `problems` HumanEval answers from llama.cpp (the GGUF) and from the merged model,
    the same prompts and stop strings; pass@1 of both and how many answers differ, said in one line."""
    llama_cpp_version()
    say(f"checking the GGUF against the merged model on {problems} HumanEval problem(s)")
    argv = [sys.executable, "-m", "train.parity", "--merged", str(merged), "--gguf", str(gguf), "--problems",
            str(problems), "--max-new-tokens", str(max_new_tokens), "--json"]
    done = subprocess.run(argv + [x for s in stops for x in ("--stop", s)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr + done.stdout).strip().splitlines() if ln.strip()]
        raise UserError(f"the parity check failed (exit {done.returncode}): {lines[-1] if lines else '?'}; "
                        "--no-check exports without it")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    say(f"parity ({report['problems']} problems, stops {report['stops']}): llama.cpp pass@1 "
        f"{report['gguf']['pass_at_1']:.3f}, merged model {report['merged']['pass_at_1']:.3f}; "
        f"{report['differ']} of {report['problems']} answers differ")
    return report


def _place(src: Path, out: Path) -> None:
    """Rename into place; an existing --out (with --force) is replaced only once the new one is whole.
    Modes as the user's umask makes them (some writers create 0600 files in the private temp folder)."""
    umask = os.umask(0)
    os.umask(umask)
    for p in [src, *src.rglob("*")]:
        p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)
    if out.exists():
        old = out.with_name(out.name + ".old")
        os.replace(out, old)
        os.replace(src, out)
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    else:
        os.replace(src, out)


def merge(cfg: AmigoConfig, sm: StageModel, dest: Path, dtype: str = "bf16", say=print) -> Path:
    """Base + adapter -> one model folder (safetensors, tokenizer, chat template), weights in `dtype`.
    train/loader.load_merged: a QLoRA adapter goes into the dequantized NF4 base it trained against; the
    merge runs on the CPU unless a GPU holds the dequantized model (never a 24 GB base onto 6 GB)."""
    require("torch", "transformers", "peft")
    quiet()
    from train.loader import load_merged
    from train.schema import TrainInputError

    base = local_base(cfg, sm)
    say(f"merging the stage {sm.stage} adapter ({sm.run.id}, {sm.method}) into {base}")
    try:
        model, plan = load_merged(base, sm.adapter, sm.method, {"bf16": "bfloat16", "fp16": "float16",
                                                                "fp32": "float32"}[dtype])
    except TrainInputError as e:
        raise UserError(str(e)) from None
    say(f"merge: {plan.reason}")
    model.config.use_cache = True  # training switched it off; inference wants it
    model.save_pretrained(dest, safe_serialization=True)
    load_tokenizer(sm, base).save_pretrained(dest)  # with chat_template.jinja: the stage's template
    return dest


def llama_cpp_source() -> Path:
    """A llama.cpp tree with convert_hf_to_gguf.py, conversion/ and gguf-py/ matching the installed
    llama-cpp-python (the quantizer and the converter from one release)."""
    env = os.environ.get("AMIGO_LLAMA_CPP")
    if env:
        if not (Path(env) / "convert_hf_to_gguf.py").is_file():
            raise UserError(f"AMIGO_LLAMA_CPP={env}: no convert_hf_to_gguf.py there")
        return Path(env)
    version = llama_cpp_version()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "amigo-burst" / f"llama.cpp-{version}"
    if (cache / "convert_hf_to_gguf.py").is_file():
        return cache
    return _fetch_converter(version, cache)


def llama_cpp_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llama_cpp_python")
    except PackageNotFoundError:
        raise UserError("GGUF export needs llama-cpp-python: pip install 'amigo-burst[export]' "
                        "(it builds llama.cpp: minutes)") from None


def _fetch_converter(version: str, cache: Path) -> Path:
    """The release's sdist from PyPI (pip download), its vendor/llama.cpp converter files into the cache."""
    import tarfile

    with tempfile.TemporaryDirectory() as tmp:
        got = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                              f"llama-cpp-python=={version}", "-d", tmp], capture_output=True, text=True)
        sdists = list(Path(tmp).glob("*.tar.gz"))
        if got.returncode != 0 or not sdists:
            last = (got.stderr.strip().splitlines() or ["?"])[-1]
            raise UserError(f"cannot fetch llama.cpp's converter (llama-cpp-python=={version} sdist): {last}; "
                            "or point AMIGO_LLAMA_CPP at a llama.cpp checkout")
        want = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "LICENSE")
        staging = Path(tmp) / "llama.cpp"
        with tarfile.open(sdists[0]) as tar:
            for m in tar.getmembers():
                rel = m.name.split("/vendor/llama.cpp/", 1)[1] if "/vendor/llama.cpp/" in m.name else None
                if rel and rel.startswith(want) and (m.isfile() or m.isdir()):
                    m.name = rel
                    tar.extract(m, staging, filter="data")
        cache.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(cache, ignore_errors=True)
        shutil.move(str(staging), cache)
    return cache


# The converter, run as llama.cpp ships it, with one question answered where its table has no entry:
# a BPE tokenizer whose pre-tokenizer hash is unknown (any tokenizer trained anew, like the demo's) but
# whose tokenizer.json splits exactly like GPT-2 (ByteLevel with GPT-2's regex, no normalizer) gets
# llama.cpp's "gpt-2" pre-tokenizer, which is that same split. Any other unknown tokenizer still fails.
BOOT = r"""
import runpy, sys
src, pre = sys.argv[1], sys.argv[2]
sys.path[:0] = [src, src + "/gguf-py"]
if pre:
    from conversion import base
    known = base.TextModel.get_vocab_base_pre
    def get_vocab_base_pre(self, tokenizer):
        try:
            return known(self, tokenizer)
        except NotImplementedError:
            return pre
    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
sys.argv = [src + "/convert_hf_to_gguf.py"] + sys.argv[3:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

QUANTIZE = r"""
import ctypes, os, sys
import llama_cpp
src, dst, ftype = sys.argv[1], sys.argv[2], sys.argv[3]
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + ftype)
p.nthread = os.cpu_count() or 1
sys.exit(llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p)))
"""


ADDS_BOS = r"""
import sys, llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], vocab_only=True, verbose=False)
ids = llm.tokenize(b"x", add_bos=True, special=False)
print(int(bool(ids) and ids[0] == llm.token_bos()))
"""


def adds_bos(gguf: Path) -> bool:
    """Does llama.cpp put a BOS token before the prompt of this GGUF by itself?"""
    llama_cpp_version()
    done = subprocess.run([sys.executable, "-c", ADDS_BOS, str(gguf)], capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"llama.cpp cannot read {gguf.name}: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return done.stdout.strip().endswith("1")


def gpt2_split(model_dir: Path) -> bool:
    """tokenizer.json pre-tokenizes exactly as GPT-2 does (llama.cpp's "gpt-2")."""
    import json

    try:
        tj = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    pre = tj.get("pre_tokenizer") or {}
    return (tj.get("model", {}).get("type") == "BPE" and not tj.get("normalizer")
            and pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space"))


def to_gguf(merged: Path, dest: Path, quant: str, say=print) -> Path:
    """llama.cpp's converter (bf16/f16/q8_0 itself), then its quantizer for the K-quants."""
    src = llama_cpp_source()
    outtype = quant if quant in CONVERTER_TYPES else "bf16"
    first = dest if quant in CONVERTER_TYPES else dest.with_name(dest.stem + ".bf16.gguf")
    say(f"converting with {src / 'convert_hf_to_gguf.py'} (--outtype {outtype})")
    _run([sys.executable, "-c", BOOT, str(src), "gpt-2" if gpt2_split(merged) else "", str(merged),
          "--outfile", str(first), "--outtype", outtype], "convert_hf_to_gguf.py")
    if quant in QUANTS:
        llama_cpp_version()
        say(f"quantizing to {quant} with llama.cpp's llama_model_quantize")
        _run([sys.executable, "-c", QUANTIZE, str(first), str(dest), quant], "llama_model_quantize")
        first.unlink()
    return dest


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr + done.stdout).strip().splitlines() if ln.strip()]
        raise UserError(f"{what} failed (exit {done.returncode}): {lines[-1] if lines else '?'}")
