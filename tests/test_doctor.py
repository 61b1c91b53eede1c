"""doctor's machine checks (the SkyPilot cloud checks run in tests/test_cloud_e2e.py, against the sandbox)."""

from __future__ import annotations

from pathlib import Path

from amigo_burst import doctor
from amigo_burst.cli import State

ROOT = Path(__file__).resolve().parent.parent


def test_python_and_torch_checks_report_versions():
    ok, what, _fix = doctor.check_python()
    assert ok and what.startswith("python 3.")
    checks = list(doctor.check_torch())
    assert checks[0][0] and checks[0][1].startswith("torch ")
    cuda_ok, cuda_what, cuda_fix = checks[1]
    assert cuda_ok or ("CUDA not available" in cuda_what and "TORCH_SPEC" in cuda_fix)


def test_store_check_ok_for_a_valid_config_and_fix_for_a_missing_one(tmp_path):
    cfg = tmp_path / "amigo.toml"
    cfg.write_text((ROOT / "presets" / "demo.toml").read_text())
    ok, what, _ = doctor.check_store(State(cfg))
    assert ok and "reachable" in what
    ok, what, fix = doctor.check_store(State(tmp_path / "missing.toml"))
    assert not ok and "config file not found" in what and "amigo.toml" in fix


def test_local_gpu_check_says_what_it_found():
    ok, what, fix = doctor.check_local_gpu()
    assert ("local GPU:" in what) if ok else ("nvidia-smi" in what and fix)
