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
    ok, what, _ = doctor.check_store(load_config(cfg))
    assert ok and "reachable" in what
    ok, what, fix = doctor.check_store(None, "config file not found: missing.toml")
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


# --- the command: exit codes, no API server left behind, no colour codes in a pipe (issue 15, 10-11) ---
def _doctor(project: Path, home: Path, port: int):
    """`amigo-burst doctor` piped, as `amigo-burst doctor | less` runs it (no NO_COLOR: a terminal's env)."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env.update(HOME=str(home), SKYPILOT_API_SERVER_LOCAL_PORT=str(port), TERM="xterm-256color", COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "amigo_burst.cli", "--config", str(project / "amigo.toml"), "doctor"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=project)


@pytest.mark.slow
def test_doctor_exit_code_no_api_server_and_no_ansi_when_piped(tmp_path):
    """Exit 0 when everything the project uses is there (a cloud it does not use is a note, not an ✗);
    exit 1 with ✗ on the missing cloud it does use. SkyPilot's credential checks run in-process: no API
    server is started (the old `sky check` call left 7 processes, ~1.2 GB) and no colour codes reach a pipe."""
    from tests.helpers import reserved_port
    from tests.sky_fixtures import api_server_pids, stop_api_server

    home = tmp_path / "home"
    home.mkdir()
    demo = tmp_path / "demo"
    demo.mkdir()
    text = (ROOT / "presets" / "demo.toml").read_text()
    (demo / "amigo.toml").write_text(text)
    port = reserved_port()
    try:
        r = _doctor(demo, home, port)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "everything this project uses is here" in r.stdout
        assert "- SkyPilot cannot use vast (not used by this project)" in r.stdout and "✗" not in r.stdout
        assert "\x1b[" not in r.stdout + r.stderr, "colour codes in a pipe"
        assert api_server_pids(port) == [], "doctor left a SkyPilot API server running"

        uses_vast = tmp_path / "uses-vast"
        uses_vast.mkdir()
        (uses_vast / "amigo.toml").write_text(text.replace('cloud = "local"', 'cloud = "vast"'))
        r = _doctor(uses_vast, home, port)
        assert r.returncode == 1, r.stdout + r.stderr
        line = next(ln for ln in r.stdout.splitlines() if "SkyPilot cannot use vast" in ln)
        assert line.startswith("✗") and "a target of this project" in line and "vast_api_key" in line, line
        assert "(exit 1)" in r.stdout.splitlines()[-1]
        assert api_server_pids(port) == []
    finally:
        stop_api_server(port)  # only if the test failed with one up


def test_project_needs_reads_the_targets_the_config_uses(tmp_path):
    cfg = load_config(ROOT / "amigo.toml")  # local stage 1 on an RTX 4050, stages 2-5 on vast
    assert doctor.project_needs(cfg) == (True, True, {"vast"})
    # a stage pinned to another cloud adds that cloud's credentials to what doctor requires
    text = (ROOT / "amigo.toml").read_text().replace("[stages.4]", '[stages.4]\ntarget = "runpod"', 1)
    (tmp_path / "amigo.toml").write_text(text)
    assert doctor.project_needs(load_config(tmp_path / "amigo.toml")) == (True, True, {"vast", "runpod"})
    assert doctor.project_needs(None) == (False, False, set())
