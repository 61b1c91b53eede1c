"""doctor's machine checks (the SkyPilot cloud checks run in tests/test_cloud_e2e.py, against the sandbox).

Each check is driven down both of its branches here, so a check that always says ✓ (or ✗) fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from amigo_burst.config import load_config
from amigo_burst.lifecycle import doctor

ROOT = Path(__file__).resolve().parent.parent


def test_python_and_torch_checks_report_versions():
    import importlib.metadata as md

    ok, what, _fix = doctor.check_python()
    assert ok and what.startswith("python 3.")
    assert list(doctor.check_torch())[0] == (True, f"torch {md.version('torch')}", "")


class _Props:
    name, total_memory = "NVIDIA GeForce RTX 4050 Laptop GPU", 6 * 2**30


@pytest.mark.parametrize("cuda", [True, False])
def test_cuda_check_down_both_branches(monkeypatch, cuda):
    """This machine's torch decides nothing here: CUDA present (a 6 GiB card) and absent, each asserted."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: _Props())
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    (_torch_ok, _, _), (ok, what, fix) = list(doctor.check_torch())
    if cuda:
        assert (ok, what, fix) == (True, "CUDA 12.8: NVIDIA GeForce RTX 4050 Laptop GPU, 6.0 GiB", "")
    else:
        assert not ok and "CUDA not available" in what and "TORCH_SPEC" in fix and "cu128" in fix


def test_torch_missing_says_how_to_install(monkeypatch):
    monkeypatch.setattr(doctor, "_version", lambda dist: None)
    (ok, what, fix), = list(doctor.check_torch())
    assert not ok and "torch not installed" in what and "make venv" in fix


def test_store_check_ok_for_a_valid_config_and_fix_for_a_missing_one(tmp_path):
    cfg = tmp_path / "amigo.toml"
    cfg.write_text((ROOT / "presets" / "demo.toml").read_text())
    ok, what, _ = doctor.check_store(lambda: load_config(cfg))
    assert ok and "reachable" in what
    ok, what, fix = doctor.check_store(lambda: load_config(tmp_path / "missing.toml"))
    assert not ok and "config file not found" in what and "amigo.toml" in fix


def test_local_gpu_check_without_nvidia_smi(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    ok, what, fix = doctor.check_local_gpu()
    assert not ok and "no nvidia-smi" in what and "driver" in fix


@pytest.mark.parametrize("answer, ok", [("NVIDIA GeForce RTX 4050 Laptop GPU, 6141 MiB", True), ("", False)])
def test_local_gpu_check_reports_what_nvidia_smi_says(tmp_path, monkeypatch, answer, ok):
    smi = tmp_path / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\necho '{answer}'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    got_ok, what, _fix = doctor.check_local_gpu()
    assert got_ok is ok
    assert (answer in what) if ok else ("nvidia-smi gave no answer" in what)
