"""What amigo-burst hands SkyPilot for the paid clouds (RunPod, Vast.ai, Lambda), and that the worker
tears the cluster down when a run ends.

Provisioning on those clouds needs their APIs and an account, so here — and only here — SkyPilot's
SDK functions (`sky.launch`, `sky.stream_and_get`, `sky.tail_logs`, `sky.job_status`, `sky.get`,
`sky.down`, `sky.jobs.launch`) are replaced by a recorder: the fake sits at the SDK boundary, and
everything on our side of it (the worker's run_sky, building the task from the real YAML,
secrets_overrides, autostop-and-down, spot recovery settings) runs for real. The assertions are on
what OUR code passed across that boundary, never on values the fake made up. The same code
launches for real on the loopback Slurm cluster in tests/test_cloud_e2e.py and test_sky_e2e.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from amigo_burst.config import load_config
from amigo_burst.errors import UserError
from amigo_burst.lifecycle import worker
from amigo_burst.lifecycle.handoff import AUTOSTOP_IDLE_MIN, LaunchPlan
from amigo_burst.runners import sky as skyr
from amigo_burst.state import ids, paths
from amigo_burst.state.records import Run, open_records
from tests.helpers import make_project

SKY = Path(__file__).resolve().parents[1] / "sky"
FAKE = "hf_PAID_CLOUD_FAKE_TOKEN_0123456789"
PAID = [("runpod", "runpod"), ("vast", "vast"), ("lambda-a100", "lambda")]  # (target, its cloud)


class SkySDK:
    """SkyPilot's client SDK as a paid cloud would answer it, recording every call our code makes.

    job_end: the state sky.job_status reports once the job's log ends ("SUCCEEDED", "FAILED", or
    "gone": the allocation vanished and the status query itself fails); tail_error: an exception
    the log stream raises mid-run (the laptop lost the connection)."""

    def __init__(self, monkeypatch, job_end: str = "SUCCEEDED", tail_error: Exception | None = None):
        import sky

        self.calls: list[tuple] = []
        self.job_end, self.tail_error = job_end, tail_error
        self._job_id = 41
        for name in ("launch", "stream_and_get", "tail_logs", "job_status", "get", "down"):
            monkeypatch.setattr(sky, name, getattr(self, name))
        monkeypatch.setattr(sky.jobs, "launch", self.jobs_launch)

    def named(self, call: str) -> list[tuple]:
        return [c for c in self.calls if c[0] == call]

    def launch(self, task, **kwargs):
        self.calls.append(("launch", task, kwargs))
        return "req-launch"

    def jobs_launch(self, task, **kwargs):
        self.calls.append(("jobs_launch", task, kwargs))
        return "req-jobs-launch"

    def stream_and_get(self, rid, output_stream=None):
        self.calls.append(("stream_and_get", rid))
        return ([self._job_id], None) if rid == "req-jobs-launch" else (self._job_id, None)

    def tail_logs(self, cluster, job_id, follow=True, output_stream=None):
        self.calls.append(("tail_logs", cluster, job_id))
        output_stream.write("(task, pid=7) AMIGO_PROGRESS {\"step\": 1}\n")
        if self.tail_error is not None:
            raise self.tail_error
        return 0 if self.job_end == "SUCCEEDED" else 100

    def job_status(self, cluster, job_ids):
        self.calls.append(("job_status", cluster, tuple(job_ids)))
        return ("req-job-status", tuple(job_ids))

    def down(self, cluster, *args, **kwargs):
        self.calls.append(("down", cluster))
        return "req-down"

    def get(self, rid):
        if rid == "req-down":
            return None
        if isinstance(rid, tuple) and rid[0] == "req-job-status":
            if self.job_end == "gone":
                raise RuntimeError("ssh: connect to host 10.0.0.7 port 22: Connection refused")
            from sky.skylet.job_lib import JobStatus

            return {j: JobStatus[self.job_end] for j in rid[1]}
        raise AssertionError(f"unexpected sky.get({rid!r})")


# --- the worker: launch with autostop, follow, tear down -----------------------------------------
def start_run(tmp_path: Path, target: str, keep: bool):
    """A project with one claimed run on TARGET and the launch plan its worker would read."""
    project = make_project(tmp_path / "p", Path("/nonexistent-model"))
    cfg = load_config(project / "amigo.toml")
    run_id = ids.new_run_id(2, target)
    plan = LaunchPlan(run_id=run_id, config_path=str(cfg.path), target=target, cluster=ids.cluster_name(run_id),
                      envs={"AMIGO_STAGE": "2", "AMIGO_RUN_ID": run_id}, workdir=str(tmp_path / "work"),
                      transport="store", spot=False, keep=keep, gpu=None)
    (tmp_path / "work").mkdir()
    runs = open_records(cfg.root)
    runs.claim_stage(2, Run(id=run_id, stage=2, target=target, cluster=plan.cluster))
    paths.run_dir(cfg.root, run_id).mkdir(parents=True, exist_ok=True)
    sink = worker.LogSink(paths.run_dir(cfg.root, run_id) / "train.log", {"HF_TOKEN": FAKE})
    return cfg, plan, runs, sink


def launched(sdk: SkySDK) -> dict:
    (_, _task, kwargs), = sdk.named("launch")
    return kwargs


@pytest.mark.parametrize("target, cloud", PAID)
def test_worker_launches_with_autostop_and_down_then_tears_down(monkeypatch, tmp_path, target, cloud):
    sdk = SkySDK(monkeypatch)
    cfg, plan, runs, sink = start_run(tmp_path, target, keep=False)

    rc = worker.run_sky(cfg, plan, {"HF_TOKEN": FAKE}, sink, runs)

    assert rc == 0
    (_, task, kwargs), = sdk.named("launch")
    assert skyr.task_cloud(task) == cloud  # the target's YAML, for real
    assert kwargs["cluster_name"] == plan.cluster
    # autostop always: a laptop that dies mid-run leaves a machine billing at most this long
    assert kwargs["idle_minutes_to_autostop"] == AUTOSTOP_IDLE_MIN and 1 <= AUTOSTOP_IDLE_MIN <= 30
    assert kwargs["down"] is True  # autostop deletes the machine: a stopped one still bills its disk
    assert sdk.calls[-1] == ("down", plan.cluster) and len(sdk.named("down")) == 1  # torn down, last
    assert runs.get(plan.run_id).job_id == sdk._job_id


@pytest.mark.parametrize("job_end, tail_error", [
    ("FAILED", None),  # the training exited non-zero
    ("gone", None),  # scancel / preemption: the job can no longer be queried
    ("SUCCEEDED", ConnectionError("log stream lost")),  # following the job broke mid-run
])
@pytest.mark.parametrize("target, cloud", PAID)
def test_worker_tears_down_when_the_run_fails(monkeypatch, tmp_path, target, cloud, job_end, tail_error):
    sdk = SkySDK(monkeypatch, job_end=job_end, tail_error=tail_error)
    cfg, plan, runs, sink = start_run(tmp_path, target, keep=False)

    if tail_error is not None:
        with pytest.raises(ConnectionError):
            worker.run_sky(cfg, plan, {}, sink, runs)
    else:
        assert worker.run_sky(cfg, plan, {}, sink, runs) == 1
        assert job_end != "gone" or "can no longer be queried" in sink.last_error
    assert sdk.named("down") == [("down", plan.cluster)]
    assert launched(sdk)["idle_minutes_to_autostop"] == AUTOSTOP_IDLE_MIN and launched(sdk)["down"] is True


@pytest.mark.parametrize("target, down", [
    ("vast", False),  # Vast can stop: --keep keeps the machine, autostop stops it when idle
    ("runpod", True),  # RunPod cannot stop: autostop deletes it after the idle minutes
    ("lambda-a100", True),  # nor can Lambda
])
def test_keep_leaves_the_cluster_up_but_never_without_autostop(monkeypatch, tmp_path, target, down):
    """--keep ("keep the cluster up after the run; it still autostops when idle"): the worker does not
    tear down, and the cluster still carries autostop — with down where the cloud cannot stop."""
    sdk = SkySDK(monkeypatch)
    cfg, plan, runs, sink = start_run(tmp_path, target, keep=True)

    assert worker.run_sky(cfg, plan, {}, sink, runs) == 0

    assert launched(sdk)["idle_minutes_to_autostop"] == AUTOSTOP_IDLE_MIN
    assert launched(sdk)["down"] is down
    assert sdk.named("down") == []


# --- the runner: the task and the secrets that cross the boundary --------------------------------
@pytest.mark.parametrize("yaml_name, cloud", [("vast.yaml", "vast"), ("runpod.yaml", "runpod"),
                                              ("lambda-a100.yaml", "lambda")])
def test_launch_passes_the_secret_only_as_a_secret(monkeypatch, tmp_path, yaml_name, cloud):
    sdk = SkySDK(monkeypatch)
    task = skyr.build_task(SKY / yaml_name, {"AMIGO_STAGE": "2"}, {"HF_TOKEN": FAKE}, tmp_path)
    skyr.launch(task, f"amigo-s2-{cloud}-x", idle_minutes=7, keep=False, on_line=lambda _l: None, follow=False)
    (_, sent, kwargs), = sdk.named("launch")
    assert kwargs["cluster_name"] == f"amigo-s2-{cloud}-x" and kwargs["idle_minutes_to_autostop"] == 7
    assert skyr.task_cloud(sent) == cloud and sent.envs["AMIGO_STAGE"] == "2"
    secret = sent.secrets["HF_TOKEN"]  # a pydantic SecretStr: the value goes to the machine, never to a print
    assert secret.get_secret_value() == FAKE and FAKE not in str(sent.envs) and FAKE not in str(secret)
    assert FAKE not in skyr.task_yaml(sent)


def test_spot_launch_is_a_managed_job_with_recovery(monkeypatch, tmp_path):
    sdk = SkySDK(monkeypatch)
    envs = {"AMIGO_STAGE": "3", "AMIGO_STORE_URI": "s3://bucket/amigo"}
    task = skyr.build_task(SKY / "vast.yaml", envs, {}, tmp_path)
    skyr.spot_launch(task, "amigo-s3-vast-x")
    (_, sent, kwargs), = sdk.named("jobs_launch")
    assert kwargs["name"] == "amigo-s3-vast-x" and sdk.named("launch") == []
    res = next(iter(sent.resources))
    assert res.use_spot and res.job_recovery and skyr.task_cloud(sent) == "vast"


@pytest.mark.badinput
def test_spot_refuses_without_s3_store_and_on_lambda(monkeypatch, tmp_path):
    sdk = SkySDK(monkeypatch)
    task = skyr.build_task(SKY / "vast.yaml", {"AMIGO_STORE_URI": ""}, {}, tmp_path)
    with pytest.raises(UserError, match="s3://"):
        skyr.spot_launch(task, "amigo-x")
    task = skyr.build_task(SKY / "lambda-a100.yaml", {"AMIGO_STORE_URI": "s3://b/p"}, {}, tmp_path)
    with pytest.raises(UserError, match="no spot"):
        skyr.spot_launch(task, "amigo-y")
    assert sdk.calls == []
