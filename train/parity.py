"""Does the GGUF answer like the model it was made from? `amigo-burst export --format gguf|ollama` runs

    python -m train.parity --merged DIR --gguf FILE [--problems 3] [--max-new-tokens 256] --stop S ... --json

K HumanEval problems (the first K of the benchmark's seeded order) are answered twice, greedily, from the
same prompt text (the merged folder's chat template: the one the Ollama TEMPLATE was checked to render
identically) and with the same stop strings (the Modelfile's): by the merged model in transformers
(train/loader.py) and by llama.cpp on the GGUF (llama-cpp-python: no sampling, no repeat penalty; the BOS
token the template writes is dropped where llama.cpp adds its own, as the Modelfile does). Both answer
sets are scored in the sandbox. A quantized GGUF (Q4_K_M) may change some answers; a wrong template or
stop token shows as answers that run on or come out as garbage, and as a pass@1 far from the merged one.

Prints {"problems", "merged": {"passed", "pass_at_1"}, "gguf": {...}, "differ", "stops", "answers": [...]}.
"""

from __future__ import annotations

import argparse
import json
import sys

from train.schema import EXIT_BAD_INPUT, TrainInputError


def cut(text: str, stops: list[str]) -> str:
    """The answer up to its first stop string (llama.cpp leaves the stop out; so does this)."""
    ends = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return text[:min(ends)] if ends else text


def merged_answers(merged: str, prompts: list[str], max_new_tokens: int, stops: list[str]) -> list[str]:
    import torch

    from train.loader import load

    model, tok, _ = load(merged, None, "lora")
    out = []
    for text in prompts:
        enc = {k: v.to(model.device) for k, v in tok(text, return_tensors="pt", add_special_tokens=False).items()}
        with torch.inference_mode():
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, top_p=None, top_k=None,
                                 temperature=None, pad_token_id=tok.pad_token_id, stop_strings=stops or None,
                                 tokenizer=tok)
        out.append(cut(tok.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True), stops))
    del model
    return out


def gguf_answers(gguf: str, prompts: list[str], bos: str | None, max_new_tokens: int, stops: list[str]) -> list[str]:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=gguf, n_ctx=4096, n_gpu_layers=-1, seed=0, verbose=False)
    try:
        adds_bos = llm.tokenize(b"x", add_bos=True, special=False)[:1] == [llm.token_bos()]
        out = []
        for text in prompts:
            if adds_bos and bos and text.startswith(bos):
                text = text[len(bos):]  # llama.cpp writes it itself (the Modelfile's TEMPLATE leaves it out too)
            r = llm.create_completion(text, max_tokens=max_new_tokens, temperature=0.0, top_k=1, top_p=1.0,
                                      min_p=0.0, repeat_penalty=1.0, stop=stops or [], seed=0)
            out.append(cut(r["choices"][0]["text"], stops))
        return out
    finally:
        llm.close()


def check(a: argparse.Namespace) -> dict:
    from transformers import AutoTokenizer

    from train.humaneval import benchmark_problems, prompt_text, score, to_completion

    problems = benchmark_problems(a.problems)
    tok = AutoTokenizer.from_pretrained(a.merged)
    if not tok.chat_template:
        raise TrainInputError(f"{a.merged}: no chat template to prompt with")
    prompts = [prompt_text(tok, p, "chat") for p in problems]
    ours = merged_answers(a.merged, prompts, a.max_new_tokens, a.stop)
    theirs = gguf_answers(a.gguf, prompts, tok.bos_token, a.max_new_tokens, a.stop)
    result: dict = {"problems": len(problems), "stops": a.stop, "max_new_tokens": a.max_new_tokens}
    for name, answers in (("merged", ours), ("gguf", theirs)):
        rows = score(problems, [to_completion(p, t, "chat") for p, t in zip(problems, answers, strict=True)])
        passed = sum(r["passed"] for r in rows)
        result[name] = {"passed": passed, "pass_at_1": round(passed / len(rows), 4)}
    result["differ"] = sum(x.strip() != y.strip() for x, y in zip(ours, theirs, strict=True))
    result["answers"] = [{"task_id": p["task_id"], "merged": x[:2000], "gguf": y[:2000]}
                         for p, x, y in zip(problems, ours, theirs, strict=True)]
    return result


def main(argv: list[str] | None = None) -> int:
    from train.humaneval import quiet

    quiet()
    p = argparse.ArgumentParser(prog="python -m train.parity", description=__doc__.splitlines()[0])
    p.add_argument("--merged", required=True, help="the merged model folder the GGUF was made from")
    p.add_argument("--gguf", required=True)
    p.add_argument("--problems", type=int, default=3)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--stop", action="append", default=[], help="a stop string (the Modelfile's), repeatable")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    try:
        if a.problems < 1 or a.max_new_tokens < 1:
            raise TrainInputError("--problems and --max-new-tokens must be >= 1")
        result = check(a)
    except TrainInputError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    print(json.dumps(result) if a.json else
          f"parity: merged pass@1 {result['merged']['pass_at_1']}, gguf pass@1 {result['gguf']['pass_at_1']}, "
          f"{result['differ']} of {result['problems']} answers differ", flush=True)
    return 0


if __name__ == "__main__":
    from train.lean import skip_bitsandbytes

    skip_bitsandbytes("merged", training=False)  # a merged model in its own dtype: no NF4 (train/lean.py)
    sys.exit(main())
