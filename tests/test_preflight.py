"""What a launch refuses before it records or starts anything (issue 15, items 1, 8 and 10).

The cloud credential checks are SkyPilot's own (`Cloud.check_credentials`), run for real against a
temp HOME: with no credential files none of them calls a network API. Vast is enabled by its key
file alone (real, no fake). RunPod's and Lambda's checks go on to call their paid APIs once a
credentials file exists: there, and only there, the API call is replaced (`list_instances`), and
each such test says so.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from amigo_burst.runners import sky as skyr
from tests.helpers import invoke

REPO = Path(__file__).resolve().parents[1]
DEMO = (REPO / "presets" / "demo.toml").read_text()


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty HOME: no ~/.config/vastai, ~/.runpod, ~/.lambda_cloud, ~/.slurm."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    return h


def project(tmp_path: Path) -> Path:
    p = tmp_path / "proj"
    p.mkdir()
    (p / "amigo.toml").write_text(DEMO.replace('"../train/samples/', f'"{REPO}/train/samples/'))
    return p


@pytest.mark.badinput
@pytest.mark.parametrize("cloud, fix", [("vast", "vast_api_key"), ("runpod", "runpod config"),
                                        ("lambda", "lambda_keys")])
def test_launch_without_credentials_is_refused_before_anything_is_recorded(home, tmp_path, cloud, fix):
    """`launch --stage 2 --cloud vast|runpod|lambda` with no credentials: one line naming the fix, exit 2,
    no .amigo/ (no run recorded, nothing prepared, nothing uploaded)."""
    p = project(tmp_path)
    r = invoke("--config", str(p / "amigo.toml"), "launch", "--stage", "2", "--cloud", cloud)
    assert r.exit_code == 2, r.output
    out = r.output.strip()
    assert len(out.splitlines()) == 1 and out.startswith("error: SkyPilot cannot use " + cloud), out
    assert fix in out and "Traceback" not in out
    assert not (p / ".amigo").exists(), "nothing recorded or written"


@pytest.mark.badinput
def test_pipeline_checks_every_cloud_it_will_use_before_stage_1(home, tmp_path):
    """The hybrid plan's cloud stages are preflighted before stage 1 trains locally for an hour."""
    p = project(tmp_path)
    toml = p / "amigo.toml"
    toml.write_text(toml.read_text().replace('cloud = "local"', 'cloud = "vast"'))
    r = invoke("--config", str(toml), "pipeline", "--plan", "hybrid")
    assert r.exit_code == 2 and "SkyPilot cannot use vast" in r.output, r.output
    assert not (p / ".amigo").exists()


def test_vast_key_file_alone_enables_vast(home):
    """Real check, no fake: Vast needs only its key file (SKYPILOT-NOTES.md)."""
    assert skyr.cloud_access("vast")[0] is False
    (home / ".config" / "vastai").mkdir(parents=True)
    (home / ".config" / "vastai" / "vast_api_key").write_text("k-0123\n")
    assert skyr.cloud_access("vast") == (True, "")


def test_vast_with_key_passes_preflight_and_reaches_the_next_check(home, tmp_path):
    """With the key, launch gets past the preflight (to the lineage check: no stage 1 run yet)."""
    (home / ".config" / "vastai").mkdir(parents=True)
    (home / ".config" / "vastai" / "vast_api_key").write_text("k-0123\n")
    p = project(tmp_path)
    r = invoke("--config", str(p / "amigo.toml"), "launch", "--stage", "2", "--cloud", "vast")
    assert r.exit_code == 2 and "no stage 1 run succeeded" in r.output, r.output


def test_runpod_check_calls_its_api_once_a_config_exists(home, monkeypatch):
    """RunPod: the config file, then an API call. FAKED: sky.provision.runpod.utils.list_instances (a paid
    API); SkyPilot's own check logic around it runs for real."""
    from sky.provision.runpod import utils as runpod_utils

    (home / ".runpod").mkdir()
    (home / ".runpod" / "config.toml").write_text('[default]\napi_key = "rp-0123"\n')
    calls = []
    monkeypatch.setattr(runpod_utils, "list_instances", lambda: calls.append(1) or {})
    assert skyr.cloud_access("runpod") == (True, "") and calls == [1]

    def unauthorized():
        raise RuntimeError("401 Unauthorized")

    monkeypatch.setattr(runpod_utils, "list_instances", unauthorized)
    ok, why = skyr.cloud_access("runpod")
    assert not ok and "401 Unauthorized" in why and "\n" not in why


def test_lambda_check_calls_its_api_once_keys_exist(home, monkeypatch):
    """Lambda: the keys file, then an API call. FAKED: LambdaCloudClient.list_instances (a paid API)."""
    from sky.provision.lambda_cloud import lambda_utils

    (home / ".lambda_cloud").mkdir()
    (home / ".lambda_cloud" / "lambda_keys").write_text("api_key = la-0123\n")
    monkeypatch.setattr(lambda_utils.LambdaCloudClient, "list_instances", lambda self: [])
    assert skyr.cloud_access("lambda") == (True, "")

    def refused(self):
        raise lambda_utils.LambdaCloudError("invalid API key")

    monkeypatch.setattr(lambda_utils.LambdaCloudClient, "list_instances", refused)
    ok, why = skyr.cloud_access("lambda")
    assert not ok and why == "Failed to access Lambda Cloud with credentials."


# --- a FAILED run's reason: one clean line -----------------------------------------------------------
SKY_ERROR = ("\x1b[31msky.exceptions.ResourcesUnavailableError: Failed to provision all possible launchable "
             "resources. Relax the task's resource requirements: " + "x" * 400 + "\x1b[0m\n"
             "Traceback (most recent call last):\n  File \"sky/launch.py\", line 1, in launch\n")


def test_one_line_keeps_the_start_drops_colours_and_the_traceback():
    from amigo_burst.errors import one_line

    line = one_line(SKY_ERROR)
    assert line.startswith("sky.exceptions.ResourcesUnavailableError: Failed to provision")
    assert "\n" not in line and "\x1b" not in line and "Traceback" not in line
    assert len(line) == 300 and line.endswith("…")


def test_worker_reason_is_the_start_of_the_telling_line(tmp_path):
    """The run's reason comes from LogSink.last_error: a long or multi-line SkyPilot error becomes its
    first line, from its start (the old [-300:] began mid-string), without ANSI codes."""
    from amigo_burst.lifecycle.worker import LogSink, final_status

    sink = LogSink(tmp_path / "train.log", {})
    sink("Running on cluster amigo-s2-vast")
    sink(f"error: {SKY_ERROR}")
    status, reason = final_status(1, has_adapter=False, last_error=sink.last_error, recorded="RUNNING",
                                  recorded_reason=None)
    assert status == "FAILED" and reason.startswith("error: sky.exceptions.ResourcesUnavailableError: Failed")
    assert "\n" not in reason and "\x1b" not in reason and len(reason) <= 300
    log = (tmp_path / "train.log").read_text()
    assert "Traceback" in log and 'File "sky/launch.py"' in log, "the whole message stays in the log"


# --- options that make no sense are refused (item 10) -------------------------------------------------
@pytest.mark.badinput
def test_gpu_on_the_local_target_is_refused(tmp_path):
    p = project(tmp_path)
    r = invoke("--config", str(p / "amigo.toml"), "launch", "--stage", "1", "--cloud", "local", "--gpu", "H100")
    assert r.exit_code == 2 and "--gpu H100" in r.output and "this machine's own GPU" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and not (p / ".amigo").exists()


# --- the fit check first, the hub offline fast (item 8) ----------------------------------------------
def test_12b_stage_1_on_the_laptop_is_refused_by_the_fit_check_before_any_hub_access(tmp_path, monkeypatch):
    """The shipped amigo.toml's stage 1 of a 12B base put on the 6 GB laptop. The pure fit check refuses it
    before the tokenizer or the hub dataset is touched (both would be hub calls)."""
    from amigo_burst.lifecycle import launch as launch_mod

    def no_hub(*_a, **_k):
        raise AssertionError("the dataset or tokenizer was touched before the fit check refused")

    monkeypatch.setattr(launch_mod, "stage_data", no_hub)
    monkeypatch.setattr(launch_mod, "load_tokenizer", no_hub)
    p = tmp_path / "real"
    p.mkdir()
    (p / "amigo.toml").write_text((REPO / "amigo.toml").read_text())
    r = invoke("--config", str(p / "amigo.toml"), "launch", "--stage", "1", "--cloud", "local")
    assert r.exit_code == 2, r.output
    assert "stage 1 does not fit local-rtx4050" in r.output and "weights 7.7" in r.output, r.output
    assert not (p / ".amigo").exists()


def test_hub_goes_offline_when_unreachable(tmp_path, monkeypatch):
    """No network: HF_HUB_OFFLINE/HF_DATASETS_OFFLINE are set within the probe's timeout, so the hub
    libraries read their caches instead of retrying for a minute."""
    import socket
    import time

    from amigo_burst.config import load_config
    from amigo_burst.lifecycle.preflight import hub_offline_if_unreachable

    def unreachable(*_a, **_k):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)  # this machine's own "no network"
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    (tmp_path / "amigo.toml").write_text((REPO / "amigo.toml").read_text())
    cfg = load_config(tmp_path / "amigo.toml")
    t0 = time.monotonic()
    assert hub_offline_if_unreachable(cfg, 2, timeout_s=1.0)
    assert time.monotonic() - t0 < 2
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["HF_DATASETS_OFFLINE"] == "1"


def test_a_local_model_and_local_data_never_probe_the_hub(tmp_path, monkeypatch):
    from amigo_burst.config import load_config
    from amigo_burst.lifecycle.preflight import hub_offline_if_unreachable

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    (tmp_path / "m").mkdir()
    (tmp_path / "amigo.toml").write_text(DEMO.replace('base = "tiny-model"', f'base = "{tmp_path / "m"}"'))
    assert not hub_offline_if_unreachable(load_config(tmp_path / "amigo.toml"), 1)
    assert "HF_HUB_OFFLINE" not in os.environ



def test_the_probe_asks_the_hub_hf_endpoint_names(tmp_path, monkeypatch):
    """A mirror in HF_ENDPOINT is the hub the libraries use: a listening one keeps the launch online,
    a closed one switches it offline (never a probe of huggingface.co, which says nothing about it)."""
    import socket

    from amigo_burst.config import load_config
    from amigo_burst.lifecycle.preflight import hub_offline_if_unreachable
    from tests.helpers import reserved_port

    (tmp_path / "amigo.toml").write_text((REPO / "amigo.toml").read_text())
    cfg = load_config(tmp_path / "amigo.toml")
    with socket.socket() as mirror:
        mirror.bind(("127.0.0.1", 0))
        mirror.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{mirror.getsockname()[1]}")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
        assert not hub_offline_if_unreachable(cfg, 2, timeout_s=2.0)
        assert "HF_HUB_OFFLINE" not in os.environ
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{reserved_port()}")  # nothing listens there
    assert hub_offline_if_unreachable(cfg, 2, timeout_s=2.0)
    assert os.environ["HF_HUB_OFFLINE"] == "1"
