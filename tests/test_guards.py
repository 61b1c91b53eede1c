"""Fast tests of the guards that slower suites also exercise: the fit check at its edge, redaction,
row validation, and the fault ledger refusing a loss."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from faults_summary import Ledger

from amigo_burst.config import load_config
from amigo_burst.errors import UserError
from amigo_burst.lifecycle.prepare import prepare_stage
from amigo_burst.planning.estimate import ALLOCATOR_MARGIN, PEAK_HEADROOM, Workload, estimate
from amigo_burst.planning.hardware import load_arch, load_gpu
from amigo_burst.secrets import MASK, redact
from amigo_burst.stages import get_stage
from train.schema import validate_row

REPO = Path(__file__).resolve().parents[1]
W = Workload("qlora", 2048, 1)


def card_with(memory_gib: float):
    return replace(load_gpu("RTX4090"), memory_gib=memory_gib)


def test_fit_check_counts_the_allocator_margin_and_cuda_context():
    arch = load_arch("llama-3.1-8b")
    e = estimate(arch, load_gpu("RTX4090"), W)
    ctx = load_gpu("RTX4090").context_gib
    assert e.peak_vram_gib == pytest.approx(e.peak_alloc_gib * (1 + ALLOCATOR_MARGIN) + ctx)
    # a card holding the allocated peak (and even the peak + context) but not the margin: does not fit
    assert not estimate(arch, card_with(e.peak_alloc_gib + ctx + 0.01), W).fits
    assert not estimate(arch, card_with(e.peak_alloc_gib * (1 + ALLOCATOR_MARGIN) + 0.01), W).fits
    assert not estimate(arch, card_with(e.peak_vram_gib + 0.01), W).fits  # the peak, but not the headroom
    assert estimate(arch, card_with(e.peak_vram_gib * (1 + PEAK_HEADROOM) + 0.01), W).fits
    # the headroom on top does not stand in for the margin: the allocated peak + context + headroom is short
    assert not estimate(arch, card_with((e.peak_alloc_gib + ctx) * (1 + PEAK_HEADROOM) + 0.01), W).fits


@pytest.mark.parametrize("over", [0.01, 0.03, 0.05])
def test_fit_check_refuses_1_to_5_percent_over_the_card(over):
    arch = load_arch("llama-3.1-8b")
    need = estimate(arch, load_gpu("RTX4090"), W).peak_vram_gib * (1 + PEAK_HEADROOM)  # what the card must hold
    e = estimate(arch, card_with(need / (1 + over)), W)
    assert not e.fits and "needs" in e.reason


def test_redact_masks_every_secret_value_and_only_those():
    secrets = {"HF_TOKEN": "hf_abcdefghijklmnop", "AWS_SECRET_ACCESS_KEY": "s3cr3t/+=Zx9", "SHORT": "abc"}
    text = "token hf_abcdefghijklmnop and key s3cr3t/+=Zx9 twice s3cr3t/+=Zx9; abc stays"
    out = redact(text, secrets)
    assert "hf_abcdefghijklmnop" not in out and "s3cr3t" not in out and out.count(MASK) == 3
    assert out.endswith("abc stays")  # values under 4 characters would mask noise, not secrets


@pytest.mark.parametrize("row, reason", [
    ({"instruction": "x", "code": "y"}, None),
    ({"instruction": "x"}, "missing field 'code'"),
    ({"instruction": "x", "code": "  "}, "field 'code' is empty"),
    ({"instruction": "x", "code": 3}, "field 'code' must be a string"),
    ([1, 2], "expected a JSON object"),
])
def test_row_validation(row, reason):
    got = validate_row(get_stage(1), row)
    assert (got is None) if reason is None else (reason in got)


def test_prepare_fails_past_half_unusable_naming_reason_count_and_first_row_and_leaves_nothing(tmp_path):
    (tmp_path / "amigo.toml").write_text('[project]\nname = "x"\n[model]\nbase = "b"\narch = "tiny"\n'
                                         '[stages.1]\ndataset = { path = "d.jsonl" }\n')
    good = json.dumps({"instruction": "x", "code": "y"})
    bad = json.dumps({"instruction": "x"})
    (tmp_path / "d.jsonl").write_text(f"{good}\n{bad}\n{bad}\n")
    cfg = load_config(tmp_path / "amigo.toml")
    with pytest.raises(UserError, match=r"2 of 3 rows unusable .*missing field 'code' x2 \(first: .*d\.jsonl:2\)"):
        prepare_stage(cfg, get_stage(1), tmp_path / "prepared")
    assert not (tmp_path / "prepared").exists()


def test_prepare_skips_and_counts_a_minority_of_unusable_rows(tmp_path):
    (tmp_path / "amigo.toml").write_text('[project]\nname = "x"\n[model]\nbase = "b"\narch = "tiny"\n'
                                         '[stages.1]\ndataset = { path = "d.jsonl" }\n')
    good = json.dumps({"instruction": "x", "code": "y"})
    (tmp_path / "d.jsonl").write_text(f"{good}\n{good}\n" + json.dumps({"instruction": "x"}) + "\n")
    p = prepare_stage(load_config(tmp_path / "amigo.toml"), get_stage(1), tmp_path / "prepared")
    assert (p.rows, p.tally.read, p.tally.dropped) == (2, 3, 1)
    assert p.tally.unusable == {"missing field 'code'": [1, f"{tmp_path / 'd.jsonl'}:3"]}
    assert len(p.path.read_text().splitlines()) == 2


def test_fault_ledger_fails_a_test_that_lost_bytes():
    ledger = Ledger("t")
    ledger.lost(0)
    with pytest.raises(AssertionError, match="54750 bytes"):
        ledger.lost(54750)
    assert ledger.lost_bytes == 54750 and ledger.checked


def test_the_fault_summary_line_is_computed_from_the_ledgers_assertions(pytester):
    """The plugin itself, in a throwaway session: a loss fails its test and is not 'survived', a fault
    never measured fails at teardown, a `faults` test without the ledger fails, and the summary line
    adds up what the assertions saw."""
    pytester.makeconftest((REPO / "tests" / "faults_summary.py").read_text())
    pytester.makeini("[pytest]\nmarkers =\n    faults: fault injection\n")
    pytester.makepyfile(test_inner='''
        import pytest

        @pytest.mark.faults
        def test_nothing_lost(faults):
            faults.inject("a")
            faults.lost(0)

        @pytest.mark.faults
        def test_bytes_lost(faults):
            faults.inject("b")
            faults.lost(54750)

        @pytest.mark.faults
        def test_never_measured(faults):
            faults.inject("c")

        @pytest.mark.faults
        def test_without_the_ledger():
            pass
    ''')
    # the same line whether the tests run in one process or on pytest-xdist workers (make test: -n)
    for args in ((), ("-n", "2")):
        r = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
        r.assert_outcomes(passed=2, failed=1, errors=2)  # never_measured: its call passes, its teardown fails
        for line in ("*AssertionError: 54750 bytes of artifacts lost",
                     "*test_never_measured injected * but never checked what was lost",
                     "*test_without_the_ledger is marked `faults` but does not take the `faults` ledger*",
                     "faults: 3 injected, 1 survived, 54750 bytes of artifacts lost"):
            r.stdout.fnmatch_lines([line])  # each anywhere in the output


def test_the_worker_log_redacts_secrets(tmp_path):
    """What a job prints reaches train.log (the file `logs` shows and the store keeps) masked."""
    from amigo_burst.lifecycle.worker import LogSink

    sink = LogSink(tmp_path / "train.log", {"HF_TOKEN": "hf_abcdefghijklmnop"})
    sink("(task, pid=12) login with hf_abcdefghijklmnop ok")
    sink("error: bad token hf_abcdefghijklmnop")
    sink.f.close()
    text = (tmp_path / "train.log").read_text()
    assert "hf_abcdefghijklmnop" not in text and text.count(MASK) == 2 and "login with" in text
    assert "hf_abcdefghijklmnop" not in sink.last_error and MASK in sink.last_error
