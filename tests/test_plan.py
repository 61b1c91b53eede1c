"""plan: each target's GPU menu, the best machine per stage, strategies that always add up, --cloud auto,
--compare; and the estimate/plan commands end to end (terminal width pinned)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amigo_burst.errors import UserError
from amigo_burst.planner import auto_target, estimate_for_target
from amigo_burst.planning.hardware import gpu_table, load_arch
from amigo_burst.planning.matrix import Option, StageInput, choose_target
from amigo_burst.planning.strategies import build_plan
from amigo_burst.stages import parse_stage_range as parse_stages
from tests.helpers import invoke as _invoke

ROOT = Path(__file__).resolve().parent.parent

LAPTOP = Option("local", "local", "RTX4050", 1, "RTX4050-Laptop", 0.0345, local=True)
OPTIONS = [
    LAPTOP,
    Option("vast", "vast", "RTX4090", 1, "RTX4090", 0.40),
    Option("runpod", "runpod", "A100-80GB", 1, "A100-80GB", 1.39),
    Option("slurm", "slurm", None, 0, None, None),
]
STAGES = [StageInput(1, "nl2code", "sft", 1024, tokens=5_000_000), StageInput(2, "context", "sft", 4096,
                                                                                tokens=20_000_000),
          StageInput(5, "preference", "dpo", 2048, tokens=4_000_000)]


def strategies(plan) -> dict:
    return {s.name: s for s in plan.strategies}


def test_12b_plan_local_never_fits_and_every_strategy_has_numbers():
    p = build_plan(load_arch("mistral-nemo-12b"), STAGES, OPTIONS, gpu_table())
    assert not any(c.fits for c in p.cells if c.local)
    s = strategies(p)
    assert list(s) == ["all local", "all cloud", "hybrid", "cheapest", "fastest"]
    for strat in s.values():  # never a row without a number
        assert strat.hours is not None and strat.usd is not None and strat.placed == len(STAGES), strat.name
        assert strat.usd == pytest.approx(sum(p.usd for p in strat.picks.values()))
    # all local: the base does not fit, so it totals the largest preset that does, and says so
    local = s["all local"]
    assert not local.feasible and "does not fit" in local.note and "totals with" in local.note
    small = load_arch(local.picks[1].how.split(",")[0])
    assert small.params < 8e9 and all(p.cell.local for p in local.picks.values())
    # hybrid: stage 1 rehearsed on the laptop and trained in the cloud, costing a little more than the cloud run
    hyb = s["hybrid"]
    assert hyb.picks[1].how == "rehearsed on the laptop" and not hyb.picks[1].cell.local
    assert 0 < hyb.picks[1].usd - hyb.picks[1].cell.usd < 0.01
    assert hyb.usd > s["all cloud"].usd
    # the three ways out for stage 1, each with its numbers (or why there is none)
    assert [w.split(":")[0] for w in p.local_options] == ["a smaller base", "a shorter sequence",
                                                           "rehearse stage 1 on the laptop (32 s, $0.00031), train it on vast RTX4090"]
    assert "NF4 weights alone" in p.local_options[1] and re.search(r"\$\d", p.local_options[0])
    for _n, (cell, why) in p.recommended.items():
        assert cell.target in ("vast", "runpod") and "cheapest" in why and "local" in why


def test_small_model_hybrid_uses_the_laptop_for_stage_1():
    p = build_plan(load_arch("llama-3.2-1b"), STAGES[:1], OPTIONS, gpu_table())
    cell = next(c for c in p.cells if c.local)
    assert cell.fits and cell.micro_batch >= 1 and cell.micro_batch * cell.grad_accum >= 16
    assert p.recommended[1][0].target == "local"  # electricity is the cheapest $
    assert p.local_options == []
    hybrid = strategies(p)["hybrid"]
    assert hybrid.feasible and hybrid.targets == {1: "local"}


def test_method_auto_prefers_lora_where_it_fits():
    # 8B at seq 16384: bf16 weights (15 GiB) + 4 GiB of checkpointed layer inputs overflow the 24 GB card
    p = build_plan(load_arch("llama-3.1-8b"), [StageInput(2, "context", "sft", 16384, tokens=10**6)], OPTIONS,
                   gpu_table())
    by = {c.target: c for c in p.cells}
    assert by["runpod"].method == "lora" and by["vast"].method == "qlora" and by["vast"].fits


def test_all_cloud_takes_the_best_cloud_per_stage_not_one_cloud():
    """Stage 1 is cheapest on the 24 GB card; stage 2 (12B at seq 32768) only fits the 80 GB one."""
    arch = load_arch("mistral-nemo-12b")
    stages = [StageInput(1, "nl2code", "sft", 1024, tokens=2_000_000), StageInput(2, "context", "sft", 32768,
                                                                                    tokens=2_000_000)]
    p = build_plan(arch, stages, OPTIONS, gpu_table())
    cloud = strategies(p)["all cloud"]
    assert cloud.targets == {1: "vast", 2: "runpod"} and cloud.feasible


def test_more_gpus_meet_a_deadline_one_cannot():
    arch = load_arch("llama-3.1-8b")
    menu = [Option("runpod", "runpod", "H100-SXM", n, "H100", 2.69 * n) for n in (1, 2, 4, 8)]
    st1 = StageInput(1, "nl2code", "sft", 2048, tokens=400_000_000)
    one = build_plan(arch, [st1], menu, gpu_table()).recommended[1][0]
    assert one.gpu_count == 1  # no deadline: one GPU is cheapest (DDP loses ~10% per doubling)
    deadline = one.hours / 3
    cell, why = build_plan(arch, [StageInput(1, "nl2code", "sft", 2048, tokens=400_000_000, max_hours=deadline)],
                           menu, gpu_table()).recommended[1]
    assert cell.gpu_count == 4 and cell.hours <= deadline and "H100-SXM:4" in why
    # 4 GPUs: 4 x 0.9^2 = 3.24x the tokens/s of one, and micro x accum x GPUs still >= 16 sequences
    e1, e4 = one.estimate, cell.estimate
    assert e4.tokens_per_s / e1.tokens_per_s == pytest.approx(3.24, rel=0.01)
    assert cell.micro_batch * cell.grad_accum * 4 >= 16


def test_choose_target_budget_and_deadline():
    arch = load_arch("llama-3.1-8b")
    cells = build_plan(arch, STAGES[1:2], OPTIONS, gpu_table()).cells
    best, why = choose_target(cells)
    cheapest = min((c for c in cells if c.fits), key=lambda c: c.usd)
    assert best is cheapest and f"${cheapest.usd:.2f}" in why
    fastest = min((c for c in cells if c.fits), key=lambda c: c.hours)
    if fastest.target != cheapest.target:
        best, why = choose_target(cells, deadline_hours=fastest.hours * 1.0001)
        assert best.target == fastest.target and "deadline" in why
    best, why = choose_target(cells, budget_usd=0.01)
    assert best is None and "budget" in why


@settings(max_examples=40, deadline=None)
@given(prices=st.lists(st.floats(0.05, 20), min_size=3, max_size=3),
       budgets=st.lists(st.one_of(st.none(), st.floats(0.01, 500)), min_size=3, max_size=3),
       model=st.sampled_from(["llama-3.2-1b", "llama-3.1-8b", "mistral-nemo-12b"]))
def test_strategies_always_add_up(prices, budgets, model):
    """Whatever the prices and budgets: every strategy places every stage something fits, its totals
    are the sums of its picks, cheapest is never dearer and fastest never slower than another strategy."""
    options = [LAPTOP] + [Option(n, n, a, 1, g, p) for (n, a, g), p in
                          zip([("vast", "RTX4090", "RTX4090"), ("runpod", "A100-80GB", "A100-80GB"),
                               ("lambda", "H100", "H100-PCIe")], prices, strict=True)]
    stages = [StageInput(s.number, s.name, s.trainer, s.seq_len, tokens=s.tokens, max_usd=b)
              for s, b in zip(STAGES, budgets, strict=True)]
    p = build_plan(load_arch(model), stages, options, gpu_table())
    by = strategies(p)
    for s in by.values():
        assert s.placed == len(stages) and s.hours is not None and s.usd is not None
        assert math.isclose(s.hours, sum(x.hours for x in s.picks.values()))
    same_base = [x for x in by.values() if not any(pk.how for pk in x.picks.values())]  # no substitutes
    assert by["cheapest"].usd <= min(x.usd for x in same_base) + 1e-9
    within = [x for x in same_base if all(pk.in_limits for pk in x.picks.values())]
    if all(pk.in_limits for pk in by["fastest"].picks.values()):
        assert by["fastest"].hours <= min(x.hours for x in within) + 1e-9


def test_parse_stages():
    assert parse_stages("1-5") == [1, 2, 3, 4, 5]
    assert parse_stages("2,4-5") == [2, 4, 5]
    for bad in ("0", "3-9", "x", ""):
        with pytest.raises(UserError):
            parse_stages(bad)


# --------------------------------------------------------------------------- through the CLI


def demo_project(tmp_path: Path) -> Path:
    text = (ROOT / "presets" / "demo.toml").read_text().replace("../train/samples", str(ROOT / "train" / "samples"))
    (tmp_path / "amigo.toml").write_text(text)
    return tmp_path / "amigo.toml"


def invoke(*args, columns: int = 100):
    return _invoke(*args, env={"HOME": "/nonexistent-home", "COLUMNS": str(columns)})


def test_estimate_json_keys():
    r = invoke("estimate", "--model", "llama-3.1-8b", "--gpu", "RTX4090", "--method", "qlora", "--seq-len", "2048",
               "--micro-batch", "1", "--tokens", "10000000", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    for key in ("fits", "peak_vram_gib", "tokens_per_s", "hours", "usd", "calibrated"):
        assert key in d
    assert d["fits"] is True and d["calibrated"] is False and d["hours"] > 0 and d["usd"] > 0
    r = invoke("estimate", "--model", "gemma-3-12b", "--gpu", "RTX4050-Laptop", "--seq-len", "256", "--json")
    d = json.loads(r.output)
    assert d["fits"] is False and d["hours"] is None and d["usd"] is None


def test_estimate_text_names_the_source_of_figures():
    r = invoke("estimate", "--model", "llama-3.1-8b", "--gpu", "H100", "--method", "lora", "--seq-len", "2048",
               "--micro-batch", "4")
    assert r.exit_code == 0, r.output
    assert "fits" in r.output and "[default]" in r.output and "tokens/s" in r.output


@pytest.mark.badinput
@pytest.mark.parametrize("args,msg", [(("--gpu", "TPUv5"), "unknown GPU"), (("--model", "gpt-9"), "unknown model"),
                                      (("--method", "full"), "unknown method")])
def test_estimate_bad_input_one_line_exit_2(args, msg):
    base = {"--model": "llama-3.1-8b", "--gpu": "H100"}
    base.update(dict(zip(args[::2], args[1::2], strict=False)))
    r = invoke("estimate", *[x for kv in base.items() for x in kv])
    assert r.exit_code == 2 and msg in r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output


SHIPPED = ROOT / "amigo.toml"
STRATEGY_ROW = re.compile(r"^ (all local|all cloud|hybrid|cheapest|fastest)\s+(\d)/(\d)\s+(\S+ \S+)\s+(\$[\d,.]+)")


def test_shipped_plan_prints_a_number_in_every_strategy_row_at_80_columns():
    r = invoke("--config", str(SHIPPED), "plan", columns=80)
    assert r.exit_code == 0, r.output
    assert max(len(line) for line in r.output.splitlines()) <= 80
    assert "…" not in r.output  # nothing cut: targets, GPUs and states whole
    for name in ("local-rtx4050", "lambda-a100", "RTX4050-Laptop", "RTX6000-Ada:1"):
        assert name in r.output
    rows = {m.group(1): m for m in map(STRATEGY_ROW.match, r.output.splitlines()) if m}
    assert set(rows) == {"all local", "all cloud", "hybrid", "cheapest", "fastest"}, r.output
    for m in rows.values():
        assert m.group(2) == m.group(3) == "5" and re.match(r"[\d.,]+ (h|min|s)", m.group(4)), m.group(0)
    assert "what would let the laptop take stage 1:" in r.output and "a smaller base: llama-3.2-3b" in r.output
    assert "shipped snapshot of SkyPilot's catalog" in r.output


def test_plan_json_gives_each_stage_its_machine():
    r = invoke("--config", str(SHIPPED), "plan", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert set(d["stages"]) == {"1", "2", "3", "4", "5"}
    for s in d["stages"].values():
        c = s["chosen"]
        for key in ("target", "cloud", "accelerator", "gpu", "gpu_count", "method", "micro_batch", "grad_accum",
                    "hours", "usd", "usd_per_hour", "instance_type"):
            assert key in c
        assert c["fits"] and c["hours"] > 0 and c["usd"] > 0 and c["gpu_count"] >= 1
        assert c["micro_batch"] * c["grad_accum"] * c["gpu_count"] >= 16
        assert c["usd"] <= (s["max_usd"] or math.inf)
    assert {x["name"] for x in d["strategies"]} == {"all local", "all cloud", "hybrid", "cheapest", "fastest"}
    assert all(x["hours"] and x["usd"] for x in d["strategies"])
    assert d["prices"]["runpod"]["source"] == "snapshot" and "01acdfd4" in d["prices"]["runpod"]["detail"]


def test_plan_compare_sets_every_original_figure_beside_the_computed_one():
    r = invoke("--config", str(SHIPPED), "plan", "--compare", "--json")
    rows = {x["figure"]: x for x in json.loads(r.output)["compare"]}
    originals = {x["original"] for x in rows.values()}
    assert {"$0.20-0.60/h", "$1.10/h", "fits 6-8 GB", "5-10 days", "15-25 days", "7-10 days for $60-250"} <= originals
    assert rows["Vast A100 price"]["computed"].startswith("$0.76-0.87/h")
    assert rows["Lambda A100 40 GB price"]["computed"] == "$1.99/h"
    assert rows["RunPod A100 40 GB"]["computed"].startswith("none: only 80 GB A100s, $1.39")
    assert all(x["reason"] and "\n" not in x["reason"] for x in rows.values())
    text = invoke("--config", str(SHIPPED), "plan", "--compare", columns=80)
    assert text.exit_code == 0 and "original" in text.output and "…" not in text.output


@pytest.mark.badinput
@pytest.mark.parametrize("opt,value", [("--budget-usd", "-1"), ("--budget-usd", "0"), ("--budget-usd", "nan"),
                                       ("--deadline-hours", "inf"), ("--deadline-hours", "-2")])
def test_plan_refuses_a_budget_that_is_not_positive(opt, value):
    r = invoke("--config", str(SHIPPED), "plan", opt, value)
    assert r.exit_code == 2 and opt in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_plan_command_on_demo_config(tmp_path):
    cfg = demo_project(tmp_path)
    r = invoke("--config", str(cfg), "plan", "--stages", "1-2", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert {c["stage"] for c in d["cells"]} == {1, 2}
    assert d["recommended"]["1"]["target"].startswith("local")
    r = invoke("--config", str(cfg), "plan")
    assert r.exit_code == 0 and "strategies" in r.output and "cheapest that fits" in r.output


def test_auto_target_for_launch(tmp_path):
    from amigo_burst.config import load_config

    cfg = load_config(demo_project(tmp_path))
    name, why = auto_target(cfg, 1, [])
    assert name.startswith("local") and "cheapest" in why
    with pytest.raises(UserError, match="no target fits"):
        auto_target(cfg, 1, [], max_usd=1e-9)


def test_estimate_for_launch_is_the_plans_machine(tmp_path):
    from amigo_burst.config import load_config

    cfg = load_config(demo_project(tmp_path))
    c = estimate_for_target(cfg, 1, "vast", tokens=1_000_000)
    d = c.to_record()
    assert d["fits"] and d["method"] == "lora" and d["micro_batch"] == 4 and d["target"] == "vast"
    assert d["accelerator"] and d["gpu_count"] >= 1 and d["usd"] == pytest.approx(d["hours"] * d["usd_per_hour"],
                                                                                  rel=1e-3)
    h100 = estimate_for_target(cfg, 1, "vast", tokens=1_000_000, gpu="H100:1")
    assert (h100.accelerator, h100.gpu_count) == ("H100", 1)
    with pytest.raises(UserError, match="offers no such machine"):
        estimate_for_target(cfg, 1, "vast", gpu="TPUv5")
    with pytest.raises(UserError, match="no target"):
        estimate_for_target(cfg, 1, "nowhere")


def test_readme_quotes_the_shipped_plans_real_output():
    """README's plan section is `amigo-burst plan` on the shipped amigo.toml at 80 columns, line for line."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("shipped snapshot), its first stage and its strategies:\n\n```\n")[1].split("```")[0]
    out = [ln.rstrip() for ln in invoke("--config", str(SHIPPED), "plan", columns=80).output.splitlines()]
    quoted = [ln for ln in block.splitlines() if ln != "..."]
    assert len(quoted) > 30
    start = out.index(quoted[0])
    first, rest = block.split("\n...\n")
    assert out[start:start + len(first.splitlines())] == first.splitlines()
    tail = rest.strip("\n").splitlines()
    s = out.index(tail[0])
    assert out[s:s + len(tail)] == tail


def test_fallbacks_are_only_machines_that_keep_the_plans_promises():
    """fallback_cells: same target, method, GPU count; room for the plan's micro-batch; at most 25% dearer for
    the stage; in budget and deadline; and the plan's hours at the fallback's $/h stay in budget (the runtime
    cap). Each machine below breaks exactly one rule, except the two that keep them all."""
    from dataclasses import replace as dc_replace

    from amigo_burst.planning.estimate import Estimate
    from amigo_burst.planning.matrix import Cell, fallback_cells

    def cell(accel, usd, hours, rate, method="lora", count=1, mb=4, target="runpod", fits=True):
        est = Estimate("m", accel, method, "sft", 2048, mb, count, 1000, fits, 20, 20, 48, 1, 1, 20, 1, "compute",
                       hours, 0.1, hours, rate, usd, False, 0, "default", "")
        return Cell(3, target, False, fits, method, mb, 4, hours, usd, 20.0, 48.0, est, "",
                    Option(target, "runpod", accel, count, accel, rate))

    best = cell("L40S", 10.0, 10.0, 1.0)
    keep = [cell("A100-80GB", 11.0, 10.0, 1.1), cell("A6000", 12.4, 12.0, 1.03)]
    broken = [cell("H100", 12.6, 4.0, 2.5),               # 26% dearer
              cell("RTX4090", 9.0, 10.0, 0.9, method="qlora"),  # another method
              cell("A40", 9.0, 5.0, 1.8, count=2),        # another GPU count (DDP world, global batch)
              cell("RTX5090", 9.0, 10.0, 0.9, mb=1),      # the plan's micro-batch does not fit
              cell("A100", 9.0, 10.0, 0.9, target="vast"),  # another target
              cell("V100", 9.0, 10.0, 0.9, fits=False),   # does not fit at all
              cell("H200", 10.5, 2.0, 5.25)]              # 10 h at $5.25/h = $52.5: the cap would stop the plan's own run
    got = fallback_cells(best, [best, *broken, *keep], budget_usd=30, deadline_hours=20)
    assert [c.accelerator for c in got] == ["A100-80GB", "A6000"]  # cheapest first
    # the budget still rules, by planning/budget.py's rule: $13 less 12 min of grace + autodown at $1.10/h,
    # x 0.9 = $11.50 for the job: A100-80GB's $11 is within it, A6000's $12.40 is not
    assert fallback_cells(best, [best, *keep], budget_usd=13) == (keep[0],)
    assert fallback_cells(best, [best, *keep], deadline_hours=10) == (keep[0],)  # and the deadline
    assert fallback_cells(dc_replace(best, option=Option("local", "local", "RTX4050", 1, "x", None, local=True),
                                     local=True), [best, *keep]) == ()  # the laptop is not rented
    many = [cell(f"G{i}", 10.0 + i / 10, 10.0, 1.0) for i in range(6)]
    assert len(fallback_cells(best, [best, *many])) == 3  # a short list: SkyPilot tries each in turn
