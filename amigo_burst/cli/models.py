"""`amigo-burst eval | try | export`: what a stage's model can do, and taking it home."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from amigo_burst.cli.context import config, console

Stage = Annotated[str, typer.Option("--stage", "-s", help="1-5 or a stage name: its newest successful run")]
RunOpt = Annotated[str | None, typer.Option("--run", help="this run's adapter instead of the stage's newest")]


def eval_(
    ctx: typer.Context,
    stage: Annotated[str, typer.Option("--stage", "-s", help="1-5 or a stage name: its newest successful run; "
                                       "0: the base, prompted as its stages are (the baseline)")],
    run_id: RunOpt = None,
    limit: Annotated[int | None, typer.Option(help="the first K of the 164 problems (default: \\[eval] limit, "
                                              "else all)")] = None,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens", help="per answer "
                                                       "(default: \\[eval] max_new_tokens)")] = None,
    cloud: Annotated[str | None, typer.Option("--cloud", help="run it on this target (local, slurm, runpod...) "
                                              "instead of this machine")] = None,
    gpu: Annotated[str | None, typer.Option(help="with --cloud: override the target's accelerator")] = None,
    device: Annotated[str, typer.Option(help="here: auto (a GPU when there is one), cpu or cuda")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object: stage, benchmark, problems, passed, "
                                          "pass_at_1, ...")] = False,
) -> None:
    """HumanEval pass@1 of a stage's adapter, or of the base (--stage 0), with its 95% interval.
    Example: amigo-burst eval --stage 2 --limit 20"""
    import sys

    from rich.console import Console

    from amigo_burst.lifecycle.evaluate import EvalOptions, evaluate
    from amigo_burst.planning.benchmark import wilson

    opts = EvalOptions(stage=stage, run_id=run_id, limit=limit, max_new_tokens=max_new_tokens, cloud=cloud,
                       gpu=gpu, device=device)
    con = console()
    # with --json, stdout holds the JSON alone: progress goes to stderr
    say = (lambda line: print(line, file=sys.stderr, flush=True)) if as_json else \
        (lambda line: con.print(line, highlight=False, markup=False))
    try:
        result = evaluate(config(ctx), opts, on_line=say, console=Console(stderr=True) if as_json else con)
    except KeyboardInterrupt:
        print("\ninterrupted: the benchmark was stopped and its .amigo/evals/ folder removed", file=sys.stderr)
        raise typer.Exit(130) from None
    if as_json:
        print(json.dumps(result))
        return
    lo, hi = wilson(result["passed"], result["problems"])
    sb = result["sandbox"]
    con.print(f"stage {result['stage']} HumanEval pass@1 [bold]{result['pass_at_1']:.3f}[/bold] (95% CI "
              f"{lo:.3f}-{hi:.3f}; {result['passed']}/{result['problems']} problems"
              f"{', partial' if result.get('partial') else ''}, {result['prompt']} prompt, {result['seconds']} s; "
              f"sandbox: network {sb['network']}, user {sb.get('user', '?')}, seccomp "
              f"{'on' if sb.get('seccomp') else 'off'}) — {result['eval_id']}", highlight=False)


def try_(
    ctx: typer.Context,
    prompt: Annotated[str, typer.Argument(help="what to ask the model")],
    stage: Stage,
    run_id: RunOpt = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens")] = 256,
    temperature: Annotated[float, typer.Option(help="0: greedy")] = 0.0,
    system: Annotated[str | None, typer.Option(help="a system message first")] = None,
    device: Annotated[str, typer.Option(help="auto (NF4 on CUDA, else CPU), cpu or cuda")] = "auto",
) -> None:
    """Ask a stage's model (base + adapter, its chat template), streaming the answer.
    Example: amigo-burst try --stage 1 "Write a function that reverses a string" """
    from rich.markup import escape

    from amigo_burst.lifecycle.models import check_sampling, local_base, stage_model, try_prompt

    check_sampling(max_new_tokens, temperature)
    cfg = config(ctx)
    sm = stage_model(cfg, stage, run_id)
    # the base as this machine loads it (a moved project: amigo.toml's, not the path recorded at training)
    console().print(f"[dim]stage {sm.stage} ({sm.run.id}) on {escape(local_base(cfg, sm))}[/dim]", highlight=False)
    try_prompt(cfg, sm, prompt, max_new_tokens=max_new_tokens, temperature=temperature, system=system,
               device=device)


def export(
    ctx: typer.Context,
    stage: Stage,
    fmt: Annotated[str, typer.Option("--format", "-f", help="merged (bf16 safetensors), gguf (llama.cpp) "
                                     "or ollama (GGUF + Modelfile)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder (merged, ollama) or FILE.gguf")],
    run_id: RunOpt = None,
    quant: Annotated[str, typer.Option(help="gguf/ollama: Q4_K_M, Q5_K_M, Q6_K, Q4_0 (llama.cpp's quantizer) "
                                       "or bf16, f16, q8_0 (the converter's)")] = "Q4_K_M",
    dtype: Annotated[str, typer.Option(help="merged: bf16, fp16 or fp32")] = "bf16",
    force: Annotated[bool, typer.Option(help="replace --out if it exists")] = False,
    check: Annotated[int, typer.Option("--check", help="gguf/ollama: answer N HumanEval problems with llama.cpp "
                                       "and with the merged model, report both pass@1 and how many differ")] = 3,
    no_check: Annotated[bool, typer.Option("--no-check", help="skip that check")] = False,
) -> None:
    """A stage's model as merged safetensors, a GGUF, or an Ollama model.
    Example: amigo-burst export --stage 5 --format ollama --out amigo-1.0"""
    from amigo_burst.lifecycle.export import ExportOptions, check_destination, llama_cpp_version
    from amigo_burst.lifecycle.export import export as do_export
    from amigo_burst.lifecycle.models import stage_model

    cfg = config(ctx)
    opts = ExportOptions(fmt=fmt, out=out, quant=quant, dtype=dtype, force=force, check=0 if no_check else check,
                         check_tokens=cfg.eval.max_new_tokens)
    check_destination(out)  # before the adapter is fetched or a base loaded
    if fmt in ("gguf", "ollama"):
        llama_cpp_version()  # no llama-cpp-python: refused before a merge that holds the base in RAM
    con = console()
    dest = do_export(cfg, stage_model(cfg, stage, run_id), opts,
                     say=lambda line: con.print(line, highlight=False, markup=False))
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) if dest.is_dir() else dest.stat().st_size
    con.print(f"{fmt}: {dest} ({size / 1e6:.1f} MB)")
    if fmt == "ollama":
        con.print(f"run it: ollama create amigo -f {dest / 'Modelfile'} && ollama run amigo")
