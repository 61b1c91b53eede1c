"""What amigo-burst hands SkyPilot for the paid clouds (RunPod, Vast.ai, Lambda).

Provisioning on those clouds needs their APIs and an account, so here — and only here — the SDK's
`sky.launch` / `sky.jobs.launch` / `sky.stream_and_get` are replaced by recorders: the fake sits
at the SkyPilot SDK boundary, and everything on our side of it (building the task from the real
YAML, secrets_overrides, autostop-and-down, spot recovery settings) runs for real. The same code
launches for real on the loopback Slurm cluster in tests/test_cloud_e2e.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from amigo_burst.errors import UserError
from amigo_burst.runners import sky as skyr

SKY = Path(__file__).resolve().parents[1] / "sky"
FAKE = "hf_PAID_CLOUD_FAKE_TOKEN_0123456789"


@pytest.fixture
def recorder(monkeypatch):
    import sky

    calls: dict = {}

    def fake_launch(task, **kwargs):
        calls["launch"] = (task, kwargs)
        return "request-1"

    def fake_jobs_launch(task, **kwargs):
        calls["jobs_launch"] = (task, kwargs)
        return "request-2"

    def fake_stream_and_get(rid, output_stream=None):
        calls.setdefault("streamed", []).append(rid)
        return ([11], None) if rid == "request-2" else (7, None)

    monkeypatch.setattr(sky, "launch", fake_launch)
    monkeypatch.setattr(sky.jobs, "launch", fake_jobs_launch)
    monkeypatch.setattr(sky, "stream_and_get", fake_stream_and_get)
    return calls


@pytest.mark.parametrize("yaml_name, cloud, keep, expect_down", [
    ("vast.yaml", "vast", False, True),
    ("vast.yaml", "vast", True, False),  # --keep: Vast can stop, so autostop stops instead of deleting
    ("runpod.yaml", "runpod", True, True),  # RunPod cannot stop: autostop always tears down
    ("lambda-a100.yaml", "lambda", True, True),  # nor can Lambda
])
def test_launch_always_sets_autostop_and_down(recorder, tmp_path, yaml_name, cloud, keep, expect_down):
    task = skyr.build_task(SKY / yaml_name, {"AMIGO_STAGE": "2"}, {"HF_TOKEN": FAKE}, tmp_path)
    job = skyr.launch(task, f"amigo-s2-{cloud}-x", idle_minutes=10, keep=keep, on_line=lambda _l: None,
                      follow=False)
    sent, kwargs = recorder["launch"]
    assert job == 7
    assert kwargs["idle_minutes_to_autostop"] == 10 and kwargs["down"] is expect_down
    assert kwargs["cluster_name"] == f"amigo-s2-{cloud}-x"
    secret = sent.secrets["HF_TOKEN"]  # a pydantic SecretStr: the value goes to the machine, never to a print
    assert secret.get_secret_value() == FAKE and FAKE not in str(sent.envs) and FAKE not in str(secret)
    assert FAKE not in skyr.task_yaml(sent)


def test_spot_launch_is_a_managed_job_with_recovery(recorder, tmp_path):
    envs = {"AMIGO_STAGE": "3", "AMIGO_STORE_URI": "s3://bucket/amigo"}
    task = skyr.build_task(SKY / "vast.yaml", envs, {}, tmp_path)
    assert skyr.spot_launch(task, "amigo-s3-vast-x") == 11
    sent, kwargs = recorder["jobs_launch"]
    assert kwargs["name"] == "amigo-s3-vast-x"
    res = next(iter(sent.resources))
    assert res.use_spot and res.job_recovery


@pytest.mark.badinput
def test_spot_refuses_without_s3_store_and_on_lambda(recorder, tmp_path):
    task = skyr.build_task(SKY / "vast.yaml", {"AMIGO_STORE_URI": ""}, {}, tmp_path)
    with pytest.raises(UserError, match="s3://"):
        skyr.spot_launch(task, "amigo-x")
    task = skyr.build_task(SKY / "lambda-a100.yaml", {"AMIGO_STORE_URI": "s3://b/p"}, {}, tmp_path)
    with pytest.raises(UserError, match="no spot"):
        skyr.spot_launch(task, "amigo-y")
    assert "jobs_launch" not in recorder
