#!/usr/bin/env python3
"""Mutation check of the test suite: does each guarded behaviour have a test that fails when it breaks?

    .venv/bin/python scripts/mutate.py             # every mutation (make mutate)
    .venv/bin/python scripts/mutate.py --fast      # only those whose tests are fast (no training)
    .venv/bin/python scripts/mutate.py --only resume --only budget   # names containing these
    .venv/bin/python scripts/mutate.py --list      # the table of mutations, nothing run

Each entry below is one small edit to the code (production code, and the fault ledger of the test
suite itself) and the tests that must catch it. For each: the repository's files (tracked and
untracked-not-ignored: your uncommitted work included) are copied into a temp folder, the edit is
applied there — never in place — and the named tests run against the copy (PYTHONPATH=the copy,
with this interpreter). A test failure means "caught"; all passing means "survived". An entry whose
snippet is not found exactly once in its file, nor in any of its alternatives (the code moved on),
is "stale", never "caught": update the entry. Before the mutations, the named tests run once on an unmutated copy (the baseline): a
test that already fails would catch everything and prove nothing.

Exit code: 0 every mutation caught; 1 one survived, errored or timed out (or the baseline failed);
3 the only problem is a stale entry.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str  # what breaks, in a few words
    path: str  # the file edited, relative to the repository
    find: str  # a short source snippet that must occur exactly once in it
    replace: str
    tests: tuple[str, ...]  # pytest node ids / files that must catch it
    slow: bool = False  # its tests train a model or run subprocess pipelines
    # the same break where the code may live instead (moved to another module, rewritten by a
    # concurrent change): (path, find, replace); the first that matches exactly once is applied
    alt: tuple[tuple[str, str, str], ...] = ()

    def edits(self) -> tuple[tuple[str, str, str], ...]:
        return ((self.path, self.find, self.replace), *self.alt)


G = "tests/test_guards.py::"
B = "tests/test_budget.py::"
P = "tests/test_sky_paid_clouds.py::"
R = "tests/test_train_resume.py::"
S = "tests/test_storage.py::"
M = "tests/test_money.py::"
L = "tests/test_lid_closed.py::"

P2 = "tests/test_second_pass.py::"  # issue 25
MUTANTS: tuple[Mutant, ...] = (
    # --- the fault ledger (tests/faults_summary.py) and artifacts lost ---
    Mutant("ledger: a loss passes", "tests/faults_summary.py",
           'assert nbytes == 0, f"{nbytes} bytes of artifacts lost"', "assert True",
           (G + "test_fault_ledger_fails_a_test_that_lost_bytes",
            G + "test_the_fault_summary_line_is_computed_from_the_ledgers_assertions")),
    Mutant("ledger: a fault never measured passes", "tests/faults_summary.py",
           "if ledger.injected and not ledger.checked:", "if False:",
           (G + "test_the_fault_summary_line_is_computed_from_the_ledgers_assertions",)),
    Mutant("ledger: a failed fault test counted as survived", "tests/faults_summary.py",
           '        seen["passed"] = report.passed', '        seen["passed"] = True',
           (G + "test_the_fault_summary_line_is_computed_from_the_ledgers_assertions",)),
    Mutant("outputs lost: a verified download never placed", "train/storage/core.py",
           "os.replace(part, target)", "part.unlink()",
           (S + "test_interrupted_download_resumes_from_partial[file]",
            S + "test_garbage_partial_is_discarded_and_download_restarts[file]")),
    Mutant("outputs lost: the adapter deleted after the fetch", "amigo_burst/lifecycle/download.py",
           "        open_from_config(cfg).get_dir(manifest_names.outputs(run_id), dest)\n    return dest",
           "        open_from_config(cfg).get_dir(manifest_names.outputs(run_id), dest)\n"
           '    (dest / "adapter" / "adapter_model.safetensors").unlink(missing_ok=True)\n    return dest',
           ("tests/test_faults.py::test_corrupted_store_object_is_refused_and_good_copy_untouched",), slow=True,
           alt=(("amigo_burst/lifecycle/download.py", "        store.get_dir(name, dest)\n    return dest",
                 "        store.get_dir(name, dest)\n"
                 '    (dest / "adapter" / "adapter_model.safetensors").unlink(missing_ok=True)\n    return dest'),)),
    # --- training learns ---
    Mutant("training at learning rate 0", "train/session.py",
           "learning_rate=c.learning_rate,", "learning_rate=0.0,",
           ("tests/test_train_learning.py",), slow=True),
    # --- what a process imports (train/lean.py) ---
    Mutant("lean: a QLoRA process loses bitsandbytes", "train/lean.py",
           'if method == "qlora" or "bitsandbytes" in sys.modules:', 'if "bitsandbytes" in sys.modules:',
           ("tests/test_lean.py::test_qlora_keeps_bitsandbytes",)),
    Mutant("lean: a LoRA process still imports bitsandbytes", "train/lean.py",
           'sys.modules["bitsandbytes"] = None', "pass",
           ("tests/test_lean.py::test_a_process_that_never_needs_bitsandbytes_does_not_import_it",)),
    # --- budgets ---
    Mutant("--max-usd refusal off", "amigo_burst/lifecycle/preflight.py",
           "if est.fits and budget.usd is not None and rate and not dollars.allows(est.hours):", "if False:",
           (B + "test_over_max_usd_is_refused_before_anything_is_launched",)),
    Mutant("stage max_usd ignored", "amigo_burst/planner.py",
           "usd = max_usd if max_usd is not None else sc.max_usd", "usd = max_usd",
           (B + "test_over_the_stages_max_usd_is_refused_before_anything_is_launched",)),
    Mutant("--force ignored", "amigo_burst/lifecycle/launch.py",
           "if est is None or force:", "if est is None:",
           (B + "test_force_or_a_larger_command_line_budget_goes_ahead_with_the_time_limit",),
           alt=(("amigo_burst/lifecycle/preflight.py", "    if force:\n        return\n    fix = ",
                 "    if False:\n        return\n    fix = "),)),
    Mutant("dollars -> seconds: minutes for hours", "amigo_burst/planning/budget.py",
           "machine_s = usd / usd_per_hour * 3600", "machine_s = usd / usd_per_hour * 60",
           (B + "test_runtime_limit_at_known_prices", M + "test_the_cap_and_the_worst_case_at_known_prices")),
    Mutant("cap: the grace and the autodown wait not paid from the budget", "amigo_burst/planning/budget.py",
           "cap, source = max(MIN_RUNTIME_S, int(machine_s - over)), \"budget\"",
           "cap, source = max(MIN_RUNTIME_S, int(machine_s)), \"budget\"",
           (M + "test_the_cap_and_the_worst_case_at_known_prices",)),
    Mutant("one rule: the plan accepts 100% of the budget", "amigo_burst/planning/matrix.py",
           "cell.usd > affordable_usd(budget_usd, cell.usd_per_hour,", "cell.usd > budget_usd + 0 * (",
           (M + "test_one_rule_for_the_plan_and_the_launch",)),
    Mutant("no cap from the estimate without max_usd", "amigo_burst/planning/budget.py",
           "elif cloud and usd_per_hour and est_hours:", "elif False:",
           (M + "test_no_dollar_budget_on_a_priced_cloud_caps_from_the_estimate",)),
    Mutant("ledger: a lost machine billed until the laptop noticed", "amigo_burst/planning/ledger.py",
           "end = min(end, a.deadline + a.overhead_s)", "end = end",
           (M + "test_ledger_sums",)),
    Mutant("ledger: running attempts commit nothing", "amigo_burst/planning/ledger.py",
           "return max(0.0, a.worst_usd - spent_usd(a, now))", "return 0.0",
           (M + "test_ledger_sums",)),
    Mutant("a resume gets the stage's whole budget again", "amigo_burst/planner.py",
           "            usd -= spent\n", "            usd -= 0\n",
           (M + "test_a_resume_gets_what_is_left_of_the_stage_and_every_attempt_at_most_the_project",)),
    Mutant("the project's max_usd ignored", "amigo_burst/planner.py",
           "if money.left is not None and (usd is None or money.left < usd):", "if False:",
           (M + "test_launch_refuses_a_stage_that_would_break_the_projects_money",
            M + "test_a_resume_gets_what_is_left_of_the_stage_and_every_attempt_at_most_the_project")),
    Mutant("re-plan: the dearest machine", "amigo_burst/planning/replan.py",
           "cheapest = {s: min(", "cheapest = {s: max(",
           (M + "test_replan_keeps_the_plan_when_it_fits_else_the_cheapest_that_fits",)),
    Mutant("pipeline: no refusal on the project's money", "amigo_burst/lifecycle/pipeline.py",
           "    if not r.fits:\n", "    if False:\n",
           (M + "test_pipeline_refuses_stages_the_projects_money_cannot_pay_for",)),
    Mutant("time limit never handed to the run", "amigo_burst/lifecycle/launch.py",
           '"AMIGO_MAX_RUNTIME_S": str(max_runtime_s),', '"AMIGO_MAX_RUNTIME_S": "0",',
           (B + "test_force_or_a_larger_command_line_budget_goes_ahead_with_the_time_limit",)),
    Mutant("run.sh drops --max-runtime-s", "train/run.sh",
           '[ "$train_s" != "0" ] && args+=(--max-runtime-s "$train_s")', "true",
           (B + "test_the_time_limit_reaches_the_entrypoint_as_max_runtime_s",)),
    Mutant("run.sh: the trainer's limit ignores the cap's deadline", "train/run.sh",
           'if [ "$train_s" = "0" ] || [ "$until_s" -lt "$train_s" ]; then train_s=$until_s; fi', "true",
           (L + "test_the_trainer_stops_before_the_caps_deadline_whatever_came_before",)),
    Mutant("the hard cap never fires", "train/capped.sh",
           'timeout --kill-after="${AMIGO_CAP_GRACE_S:-120}" "$left" "$@" &', '"$@" &',
           (L + "test_a_job_that_hangs_is_ended_at_the_cap",)),
    Mutant("down's SIGTERM does not reach the job", "train/capped.sh",
           "trap 'kill -TERM \"$child\" 2>/dev/null' TERM INT HUP", "true",
           (L + "test_a_stop_signal_reaches_the_job_and_the_trainer_saves",)),
    Mutant("a pulled checkpoint taken in unverified", "train/storage/local.py",
           "            except StoreError:\n                missing.append(sha)\n",
           "            except StoreError:\n                pass\n",
           (L + "test_adopt_takes_a_manifest_only_with_every_object_matching_its_sha",)),
    Mutant("resume: a run without a checkpoint", "amigo_burst/lifecycle/resume.py",
           'and steps.get(r.id, 0) > 0:', "and True:",
           (L + "test_resume_picks_the_newest_stopped_or_failed_run_that_left_a_checkpoint",)),
    # --- autostop and teardown on paid clouds ---
    Mutant("autostop: no idle minutes to SkyPilot", "amigo_burst/runners/sky.py",
           "idle_minutes_to_autostop=idle_minutes", "idle_minutes_to_autostop=None",
           (P + "test_worker_launches_with_autostop_and_down_then_tears_down",)),
    Mutant("autostop: the worker passes no idle minutes", "amigo_burst/lifecycle/cloud_job.py",
           "idle_minutes=AUTOSTOP_IDLE_MIN", "idle_minutes=-1",
           (P + "test_worker_launches_with_autostop_and_down_then_tears_down",)),
    Mutant("autostop stops instead of down=True", "amigo_burst/runners/sky.py",
           "down = not keep or (c is not None and not c.can_stop)", "down = False",
           (P + "test_worker_launches_with_autostop_and_down_then_tears_down",)),
    Mutant("--keep on a cloud that cannot stop: no down", "amigo_burst/runners/sky.py",
           "down = not keep or (c is not None and not c.can_stop)", "down = not keep",
           (P + "test_keep_leaves_the_cluster_up_but_never_without_autostop",)),
    Mutant("worker never tears down", "amigo_burst/lifecycle/cloud_job.py",
           "    if not plan.keep:\n        skyr.down(plan.cluster)\n        sink(f\"cluster {plan.cluster} torn down\")\n    return rc",
           "    return rc",
           (P + "test_worker_launches_with_autostop_and_down_then_tears_down",
            P + "test_worker_tears_down_once_the_job_has_ended")),
    Mutant("a lost log stream taken for the job's end (and torn down)", "amigo_burst/lifecycle/cloud_job.py",
           "            lost = one_line(e)[:160]\n", "            return \"FAILED\"\n",
           (P + "test_a_lost_log_stream_never_tears_down_a_job_that_still_trains",)),
    Mutant("a machine out of reach taken for gone", "amigo_burst/lifecycle/cloud_job.py",
           "    except Exception:  # noqa: BLE001 - SkyPilot could not ask the provider either: unknown, not gone\n"
           "        return None",
           "    except Exception:  # noqa: BLE001 - SkyPilot could not ask the provider either: unknown, not gone\n"
           "        return GONE",
           (P + "test_a_machine_that_cannot_be_asked_is_followed_until_it_has_ended_itself",)),
    Mutant("a job that died early: 'outputs not brought back' hides its own error", "amigo_burst/lifecycle/cloud_job.py",
           "collect(cfg, plan, lambda _line: None)", "collect(cfg, plan, sink)",
           (P + "test_worker_tears_down_once_the_job_has_ended",)),
    Mutant("spot: restarts on every error again", "amigo_burst/runners/sky_jobs.py",
           '"max_restarts_on_errors": 0', '"max_restarts_on_errors": 2',
           (P + "test_spot_launch_is_a_managed_job_restarted_on_preemption_only",)),
    Mutant("down of a spot run tears down a cluster name", "amigo_burst/lifecycle/teardown.py",
           "        spot_cancel(run.job_id)\n", "        sky_down(run.cluster)\n",
           (P + "test_down_of_a_spot_run_cancels_the_managed_job",)),
    # --- resume takes the newest checkpoint ---
    Mutant("resume: oldest local checkpoint", "train/session.py",
           "self.resumed_from = str(local[-1][1])", "self.resumed_from = str(local[0][1])",
           (R + "test_resume_auto_takes_the_newest_complete_local_checkpoint",)),
    Mutant("resume: oldest checkpoint in the store", "train/session.py",
           "step, name = remote[-1]", "step, name = remote[0]",
           (R + "test_resume_auto_fetches_the_newest_checkpoint_from_the_store",)),
    Mutant("resume: checkpoints ordered by name, not step", "train/mirror.py",
           "found.append((int(m.group(1)), d))\n    return sorted(found)",
           "found.append((int(m.group(1)), d))\n    return sorted(found, key=lambda x: x[1].name)",
           (R + "test_resume_auto_takes_the_newest_complete_local_checkpoint",)),
    # --- the estimator's fit check ---
    Mutant("fit check: no allocator margin", "amigo_burst/planning/estimate.py",
           "peak = alloc * (1 + ALLOCATOR_MARGIN) + gpu.context_gib", "peak = alloc + gpu.context_gib",
           (G + "test_fit_check_counts_the_allocator_margin_and_cuda_context",)),
    Mutant("fit check: no CUDA context", "amigo_burst/planning/estimate.py",
           "peak = alloc * (1 + ALLOCATOR_MARGIN) + gpu.context_gib", "peak = alloc * (1 + ALLOCATOR_MARGIN)",
           (G + "test_fit_check_counts_the_allocator_margin_and_cuda_context",)),
    Mutant("fit check: allocator margin set to 0", "amigo_burst/planning/estimate.py",
           "ALLOCATOR_MARGIN = 0.08", "ALLOCATOR_MARGIN = 0.0",
           (G + "test_fit_check_counts_the_allocator_margin_and_cuda_context",)),
    Mutant("fit check: 5% over the card fits", "amigo_burst/planning/estimate.py",
           "fits = peak * (1 + room) <= gpu.memory_gib", "fits = peak * (1 + room) <= gpu.memory_gib * 1.05",
           (G + "test_fit_check_refuses_1_to_5_percent_over_the_card",)),
    # --- redaction and row validation (fast tests, not only slow ones) ---
    Mutant("redaction off", "amigo_burst/secrets.py",
           "text = text.replace(value, MASK)", "text = text",
           (G + "test_redact_masks_every_secret_value_and_only_those",)),
    Mutant("worker log not redacted", "amigo_burst/lifecycle/worker.py",
           'line = redact(ANSI.sub("", SKY_PREFIX.sub("", line, count=1)), self.secrets)',
           'line = ANSI.sub("", SKY_PREFIX.sub("", line, count=1))',
           (G + "test_the_worker_log_redacts_secrets",)),
    Mutant("row validation off", "train/schema.py",
           '    """Return None for a good row, else a short reason naming the field."""\n',
           '    """Return None for a good row, else a short reason naming the field."""\n    return None\n',
           (G + "test_row_validation",)),
    # the whole file: its prepare tests are being reshaped (unusable rows skipped and counted)
    Mutant("prepare skips row validation", "amigo_burst/lifecycle/prepare.py",
           "problem = validate_row(spec, canon)", "problem = None", ("tests/test_guards.py",),
           alt=(("train/prepare.py", "reason = missing_column(validate_row(spec, row), src.columns, raw)",
                 "reason = None"),)),
    Mutant("the entrypoint skips row validation", "train/data.py",
           "reason = validate_row(spec, row)", "reason = None",
           ("tests/test_train_badinput.py::test_bad_row_names_file_line_and_field",)),
    # --- issue 25: a second pass as a new user ---
    Mutant("a probe counts as its stage's done run", "amigo_burst/lifecycle/pipeline.py",
           'ok = [r for r in runs if r.status == "SUCCEEDED" and not r.is_probe  # oldest first',
           'ok = [r for r in runs if r.status == "SUCCEEDED"  # oldest first',
           (P2 + "test_a_probe_is_never_the_done_run_of_its_stage",)),
    Mutant("arguments that are not UTF-8 pass", "amigo_burst/cli/app.py",
           'check_utf8(ctx.meta.get("amigo.args", []))', "None",
           (P2 + "test_hostile_arguments_are_one_line_exit_2",)),
    Mutant("launch does not check the base model", "amigo_burst/lifecycle/launch.py",
           "    check_base(cfg)  # a missing/broken", "    None  # a missing/broken",
           (P2 + "test_a_broken_base_model_is_refused_by_every_command_before_anything_is_recorded",)),
    Mutant("down asks SkyPilot for an all-local project", "amigo_burst/lifecycle/teardown.py",
           "sky = uses_sky(cfg, runs)", "sky = True",
           (P2 + "test_down_on_an_all_local_project_never_asks_skypilot",)),
    # --- HumanEval numbers (issue 23) ---
    Mutant("verdict: exit code 0 counts as passed", "train/sandbox.py",
           'if outcome == "stopped" and code == signal.SIGSTOP:',
           'if (outcome == "stopped" and code == signal.SIGSTOP) or (outcome == "exited" and code == 0):',
           ("tests/test_humaneval.py::test_every_exit_0_route_scores_failed",)),
    Mutant("verdict: the stop allowed from any finish frame", "train/sandbox_guard.py",
           "and ((f is armed and f.f_code is finish_code)", "and ((f.f_code is finish_code)",
           ("tests/test_humaneval.py::test_the_function_cannot_fake_the_proof_during_check",)),
    Mutant("escape: os.system let through", "train/sandbox_guard.py",
           '"os.system", ', "", ("tests/test_sandbox.py::test_every_escape_route_fails_in_the_audit_hook_mode",)),
    Mutant("escape: seccomp refuses nothing", "train/sandbox_guard.py",
           '    code += [(0x15, "deny", 0, nr) for nr in refused.values()]', "    code += []",
           ("tests/test_sandbox.py::test_every_escape_route_fails_in_the_audit_hook_mode",)),
    Mutant("regression stop off", "amigo_burst/lifecycle/pipeline.py",
           "        if held:  # the money", "        if False:  # the money",
           ("tests/test_quality_rules.py::test_pipeline_holds_the_next_stage_after_a_regression",)),
    Mutant("a partial run compared with a full one", "amigo_burst/planning/benchmark.py",
           '    if new.get("partial") or old.get("partial"):', "    if False:",
           ("tests/test_humaneval.py::test_report_benchmarks_baseline_intervals_noise_and_partial",)),
    Mutant("the adapter check refuses nothing", "train/loader.py", "    if effect == 0.0:", "    if False:",
           ("tests/test_quality_rules.py::test_the_adapter_check_refuses_an_adapter_that_is_not_applied",)),
    Mutant("a QLoRA merge onto a GPU smaller than it", "train/loader.py",
           '        if gpu_bytes is not None and device != "cpu" and need <= gpu_bytes:',
           '        if gpu_bytes is not None and device != "cpu":',
           ("tests/test_quality_rules.py::test_a_qlora_merge_on_a_small_gpu_is_placed_on_the_cpu",)),
    Mutant("follow crashes on a log set aside", "amigo_burst/lifecycle/follow.py",
           "    except FileNotFoundError:  # not written yet, or set aside: the next poll reads it",
           "    except KeyError:",
           ("tests/test_lid_closed.py::test_a_log_set_aside_while_it_is_read_is_no_crash",)),
)


# --- the temp copy --------------------------------------------------------------------------------
def repo_files(root: Path) -> list[str]:
    """Tracked and untracked-not-ignored files (the working tree as it is, uncommitted work included)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         capture_output=True, text=True, check=True).stdout
    return sorted({f for f in out.split("\0") if f and (root / f).is_file()})


def make_copy(root: Path, files: list[str]) -> Path:
    dest = Path(tempfile.mkdtemp(prefix="amigo-mutant-"))
    for f in files:
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / f, dest / f)
    return dest


def apply(copy: Path, m: Mutant) -> tuple[str | None, str]:
    """Edit the copy: (the file edited, ""), or (None, why the entry is stale)."""
    why = []
    for path, find, replace in m.edits():
        p = copy / path
        if not p.is_file():
            why.append(f"{path} is gone")
            continue
        text = p.read_text(encoding="utf-8")
        n = text.count(find)
        if n == 1:
            p.write_text(text.replace(find, replace), encoding="utf-8")
            return path, ""
        why.append(f"snippet found {n} times in {path}")
    return None, "; ".join(why)


def run_tests(copy: Path, tests: list[str], timeout_s: int) -> tuple[int | None, str]:
    """pytest on the copy: (exit code, or None on timeout; the output's tail)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1", COLUMNS="120")
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x", "--no-header", *tests]
    try:
        p = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
        return None, (e.stdout or b"")[-2000:].decode(errors="replace") if isinstance(e.stdout, bytes) else ""
    return p.returncode, (p.stdout + p.stderr)[-3000:]


# --- one mutation -----------------------------------------------------------------------------------
@dataclass
class Result:
    mutant: Mutant
    outcome: str  # caught | survived | stale | error | timeout
    seconds: float
    detail: str = ""
    path: str = ""  # the file the edit went into


def check(m: Mutant, files: list[str], timeout_s: int, keep: bool) -> Result:
    t0 = time.monotonic()
    copy = make_copy(REPO, files)
    try:
        path, why = apply(copy, m)
        if path is None:
            return Result(m, "stale", 0.0, why, m.path)
        rc, tail = run_tests(copy, list(m.tests), timeout_s)
        outcome = {None: "timeout", 0: "survived", 1: "caught"}.get(rc, "error")
        return Result(m, outcome, time.monotonic() - t0, "" if outcome == "caught" else tail, path)
    finally:
        if not keep:
            shutil.rmtree(copy, ignore_errors=True)


def table(results: list[Result]) -> str:
    w = max(len(r.mutant.name) for r in results)
    f = max(len(r.path) for r in results)
    lines = [f"{'mutation':<{w}}  {'file':<{f}}  {'result':<8}  {'time':>6}  caught by"]
    for r in results:
        tests = ", ".join(t.replace("tests/", "").split("::")[-1] for t in r.mutant.tests)
        lines.append(f"{r.mutant.name:<{w}}  {r.path:<{f}}  {r.outcome:<8}  {r.seconds:5.0f}s  {tests}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", default=[], help="mutations whose name contains this (repeatable)")
    ap.add_argument("--fast", action="store_true", help="skip mutations whose tests train (slow)")
    ap.add_argument("--list", action="store_true", help="print the mutations and exit")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of the named tests")
    ap.add_argument("--jobs", type=int, default=1, help="mutations at once (default 1)")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per mutation's tests (default 900)")
    ap.add_argument("--keep", action="store_true", help="keep the temp copies (for a look at a survivor)")
    a = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # cleanup (finally) on kill too

    chosen = [m for m in MUTANTS if (not a.only or any(o.lower() in m.name.lower() for o in a.only))
              and not (a.fast and m.slow)]
    if not chosen:
        print("no mutation matches", file=sys.stderr)
        return 2
    if a.list:
        for m in chosen:
            print(f"{m.name:<50} {m.path:<36} {'slow' if m.slow else 'fast'}  {' '.join(m.tests)}")
        return 0

    files = repo_files(REPO)
    t0 = time.monotonic()
    if not a.no_baseline:
        tests = sorted({t for m in chosen for t in m.tests})
        copy = make_copy(REPO, files)
        try:
            print(f"baseline: {len(tests)} test ids on an unmutated copy ...", flush=True)
            rc, tail = run_tests(copy, tests, a.timeout * 2)
        finally:
            shutil.rmtree(copy, ignore_errors=True)
        if rc != 0:
            print(f"baseline failed (exit {rc}): the named tests must pass before mutating\n{tail}", file=sys.stderr)
            return 1
        print(f"baseline: passed ({time.monotonic() - t0:.0f}s)", flush=True)

    results: list[Result] = []
    one = lambda m: check(m, files, a.timeout, a.keep)  # noqa: E731
    with ThreadPoolExecutor(max_workers=a.jobs) if a.jobs > 1 else contextlib.nullcontext() as pool:
        # one at a time in this thread: Ctrl-C / SIGTERM stops the tests and removes the copy
        for r in (pool.map(one, chosen) if pool is not None else map(one, chosen)):
            results.append(r)
            print(f"{r.outcome:<8} {r.seconds:5.0f}s  {r.mutant.name}", flush=True)
            if r.outcome not in ("caught", "stale"):
                print("  " + r.detail.strip().replace("\n", "\n  ")[-1500:], flush=True)
            elif r.outcome == "stale":
                print(f"  stale: {r.detail}", flush=True)

    print()
    print(table(results))
    counts = {k: sum(r.outcome == k for r in results) for k in ("caught", "survived", "stale", "error", "timeout")}
    print(f"\n{len(results)} mutations: " + ", ".join(f"{v} {k}" for k, v in counts.items())
          + f" ({time.monotonic() - t0:.0f}s)")
    if counts["survived"] or counts["error"] or counts["timeout"]:
        return 1
    return 3 if counts["stale"] else 0


if __name__ == "__main__":
    sys.exit(main())
