"""What amigo-burst hands SkyPilot for the paid clouds (RunPod, Vast.ai, Lambda), and how the worker
follows a job to its end: teardown only after a terminal status, never because the log stream broke.

Provisioning on those clouds needs their APIs and an account, so here — and only here — SkyPilot's
SDK functions (`sky.launch`, `sky.stream_and_get`, `sky.tail_logs`, `sky.job_status`, `sky.status`,
`sky.get`, `sky.down`, and the managed-jobs API `sky.jobs.launch`, `sky.jobs.queue_v2`,
`sky.jobs.cancel`) are replaced by a recorder: the fake sits at the SDK boundary, and everything on
our side of it (the worker's run_sky, building the task from the real YAML, secrets_overrides,
autostop-and-down, spot recovery settings, reattaching after a lost stream) runs for real. The
assertions are on what OUR code passed across that boundary, never on values the fake made up. The
same code launches for real on the loopback Slurm cluster in tests/test_cloud_e2e.py,
test_faults_cloud.py and test_sky_e2e.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from amigo_burst.config import load_config
from amigo_burst.errors import UserError
from amigo_burst.lifecycle import cloud_job, worker
from amigo_burst.lifecycle.handoff import AUTOSTOP_IDLE_MIN, LaunchPlan
from amigo_burst.runners import sky as skyr
from amigo_burst.runners import sky_jobs
from amigo_burst.state import ids, paths
from amigo_burst.state.records import Run, open_records
from tests.helpers import make_project

SKY = Path(__file__).resolve().parents[1] / "sky"
FAKE = "hf_PAID_CLOUD_FAKE_TOKEN_0123456789"
PAID = [("runpod", "runpod"), ("vast", "vast"), ("lambda-a100", "lambda")]  # (target, its cloud)


class SkySDK:
    """SkyPilot's client SDK as a paid cloud would answer it, recording every call our code makes.

    job_end: the state sky.job_status reports once the job's log ends ("SUCCEEDED", "FAILED", or
    "gone": the allocation vanished, the status query fails and sky.status no longer lists the
    cluster); tail_errors: exceptions the log stream raises on its first calls (the laptop lost the
    connection), while the job keeps RUNNING; spot: the managed job's (status, recovery_count) per
    queue call."""

    def __init__(self, monkeypatch, job_end: str = "SUCCEEDED", tail_errors: tuple = (),
                 spot: tuple = (("SUCCEEDED", 0),)):
        import sky

        self.calls: list[tuple] = []
        self.job_end, self.tail_errors, self.spot = job_end, tuple(tail_errors), list(spot)
        self.tails = 0
        self._job_id = 41
        for name in ("launch", "stream_and_get", "tail_logs", "job_status", "status", "get", "down"):
            monkeypatch.setattr(sky, name, getattr(self, name))
        monkeypatch.setattr(sky.jobs, "launch", self.jobs_launch)
        monkeypatch.setattr(sky.jobs, "queue_v2", self.jobs_queue)
        monkeypatch.setattr(sky.jobs, "cancel", self.jobs_cancel)
        monkeypatch.setattr(cloud_job, "BACKOFF_S", (0,))  # reattach at once: no test waits on a timer

    def named(self, call: str) -> list[tuple]:
        return [c for c in self.calls if c[0] == call]

    def launch(self, task, **kwargs):
        self.calls.append(("launch", task, kwargs))
        return "req-launch"

    def jobs_launch(self, task, **kwargs):
        self.calls.append(("jobs_launch", task, kwargs))
        return "req-jobs-launch"

    def jobs_queue(self, **kwargs):
        self.calls.append(("jobs_queue", kwargs))
        return ("req-jobs-queue", kwargs)

    def jobs_cancel(self, **kwargs):
        self.calls.append(("jobs_cancel", kwargs))
        return "req-jobs-cancel"

    def stream_and_get(self, rid, output_stream=None):
        self.calls.append(("stream_and_get", rid))
        return ([self._job_id], None) if rid == "req-jobs-launch" else (self._job_id, None)

    def tail_logs(self, cluster, job_id, follow=True, output_stream=None):
        self.calls.append(("tail_logs", cluster, job_id))
        self.tails += 1
        output_stream.write("(task, pid=7) AMIGO_PROGRESS {\"step\": 1}\n")  # replayed from the start each time
        if self.job_end == "FAILED":
            output_stream.write("(task, pid=7) error: inputs/data.jsonl:3: field 'request' is empty\n")
        if self.tails <= len(self.tail_errors):
            raise self.tail_errors[self.tails - 1]
        return 0 if self.job_end == "SUCCEEDED" else 100

    def job_status(self, cluster, job_ids):
        self.calls.append(("job_status", cluster, tuple(job_ids)))
        return ("req-job-status", tuple(job_ids))

    def status(self, cluster_names=None, refresh=None, **kwargs):
        self.calls.append(("status", tuple(cluster_names or ())))
        return ("req-status", tuple(cluster_names or ()))

    def down(self, cluster, *args, **kwargs):
        self.calls.append(("down", cluster))
        return "req-down"

    def get(self, rid):
        if rid in ("req-down", "req-jobs-cancel"):
            return None
        if self.job_end == "offline" and isinstance(rid, tuple):
            raise ConnectionError("Could not connect to the cloud's API: network is unreachable")
        if isinstance(rid, tuple) and rid[0] == "req-job-status":
            if self.job_end == "gone":
                raise RuntimeError("ssh: connect to host 10.0.0.7 port 22: Connection refused")
            from sky.skylet.job_lib import JobStatus

            # the log stream broke while the job trains: asked then, SkyPilot says RUNNING
            state = "RUNNING" if self.tail_errors_pending else self.job_end
            return {j: JobStatus[state] for j in rid[1]}
        if isinstance(rid, tuple) and rid[0] == "req-status":  # gone: SkyPilot lists no such cluster
            return [] if self.job_end == "gone" else [{"name": n, "status": "UP"} for n in rid[1]]
        if isinstance(rid, tuple) and rid[0] == "req-jobs-queue":
            from sky.jobs.state import ManagedJobStatus

            status, n = self.spot.pop(0) if len(self.spot) > 1 else self.spot[0]
            return ([{"job_id": j, "job_name": "amigo-x", "status": ManagedJobStatus[status],
                      "recovery_count": n, "failure_reason": None} for j in rid[1]["job_ids"]], 1, {}, 1)
        raise AssertionError(f"unexpected sky.get({rid!r})")

    @property
    def tail_errors_pending(self) -> bool:
        """The job is still training while the stream keeps breaking."""
        return self.tails <= len(self.tail_errors)


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


@pytest.mark.parametrize("job_end", [
    "FAILED",  # the training exited non-zero
    "gone",  # scancel / preemption / autodown: the job can no longer be asked, SkyPilot lists no cluster
])
@pytest.mark.parametrize("target, cloud", PAID)
def test_worker_tears_down_once_the_job_has_ended(monkeypatch, tmp_path, target, cloud, job_end):
    sdk = SkySDK(monkeypatch, job_end=job_end)
    cfg, plan, runs, sink = start_run(tmp_path, target, keep=False)

    assert worker.run_sky(cfg, plan, {}, sink, runs, collect=worker.collect_outputs) == 1
    assert job_end != "gone" or (plan.cluster in sink.last_error and "allocation is gone" in sink.last_error)
    # no outputs to collect from a job that died early: its own error line stays the reason
    assert job_end != "FAILED" or sink.last_error == "error: inputs/data.jsonl:3: field 'request' is empty"
    assert sdk.named("down") == [("down", plan.cluster)]
    assert launched(sdk)["idle_minutes_to_autostop"] == AUTOSTOP_IDLE_MIN and launched(sdk)["down"] is True


@pytest.mark.parametrize("target, cloud", PAID)
def test_a_lost_log_stream_never_tears_down_a_job_that_still_trains(monkeypatch, tmp_path, target, cloud):
    """The stream breaks twice (Wi-Fi, a laptop asleep) while SkyPilot says the job is RUNNING: the worker
    follows it again each time, tears down only after the job SUCCEEDED, and the replayed log is not
    written twice."""
    sdk = SkySDK(monkeypatch, tail_errors=(ConnectionError("log stream lost"), TimeoutError("read timed out")))
    cfg, plan, runs, sink = start_run(tmp_path, target, keep=False)

    assert worker.run_sky(cfg, plan, {}, sink, runs) == 0

    tails = [i for i, c in enumerate(sdk.calls) if c[0] == "tail_logs"]
    assert len(tails) == 3 and sdk.calls[-1] == ("down", plan.cluster) and len(sdk.named("down")) == 1
    assert all(c[0] != "down" for c in sdk.calls[:tails[-1]]), "torn down while the job was still training"
    log = (paths.run_dir(cfg.root, plan.run_id) / "train.log").read_text()
    assert log.count("the job goes on; following it again") == 2 and "(read timed out)" in log
    assert log.count('AMIGO_PROGRESS {"step": 1}') == 1, "the replay of the job's log is not written again"


def test_a_machine_that_cannot_be_asked_is_followed_until_it_has_ended_itself(monkeypatch, tmp_path):
    """No answer at all (the laptop offline: the stream, the job's status and SkyPilot's own refresh all
    fail): the worker keeps trying, and takes the job for ended only once its cap, the kill grace and
    the autodown wait have passed (a minute per try on the clock here)."""
    sdk = SkySDK(monkeypatch, job_end="offline", tail_errors=(ConnectionError("offline"),) * 50)
    cfg, plan, runs, sink = start_run(tmp_path, "vast", keep=False)
    now = [1_000_000.0]

    def clock():
        now[0] += 60
        return now[0]

    status = cloud_job.follow_to_end(plan.cluster, 41, sink, now[0] + 600, sleep=lambda s: None, clock=clock)
    assert status == cloud_job.GONE and sdk.tails == 11 and sdk.named("down") == []  # 11 min > 10
    assert len(sdk.named("status")) == 11  # each time: is the cluster gone? (no answer: not taken for yes)
    assert "ended itself" in sink.last_error


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


def test_spot_launch_is_a_managed_job_restarted_on_preemption_only(monkeypatch, tmp_path):
    """What reaches SkyPilot's managed-jobs API: job_recovery with no restarts on errors, and exactly the
    entrypoint's stop code (a SIGTERM caught: the preemption) as the code that recovers it. A budget stop
    (3), bad input (2), the cap (124) and a crash are final."""
    from train.schema import EXIT_BAD_INPUT, EXIT_BUDGET, EXIT_STOPPED

    sdk = SkySDK(monkeypatch)
    envs = {"AMIGO_STAGE": "3", "AMIGO_STORE_URI": "s3://bucket/amigo"}
    task = skyr.build_task(SKY / "vast.yaml", envs, {}, tmp_path)
    sky_jobs.spot_launch(task, "amigo-s3-vast-x")
    (_, sent, kwargs), = sdk.named("jobs_launch")
    assert kwargs["name"] == "amigo-s3-vast-x" and sdk.named("launch") == []
    res = next(iter(sent.resources))
    assert res.use_spot and skyr.task_cloud(sent) == "vast"
    assert res.job_recovery["max_restarts_on_errors"] == 0
    assert res.job_recovery["recover_on_exit_codes"] == [EXIT_STOPPED]
    assert not {EXIT_BUDGET, EXIT_BAD_INPUT, 124, 1} & set(res.job_recovery["recover_on_exit_codes"])


def test_spot_run_is_followed_through_the_managed_jobs_api_with_its_recoveries(monkeypatch, tmp_path):
    """The worker asks sky.jobs.queue_v2 for its job (never a cluster by name) until it is terminal, and
    records the recovery count `status` shows."""
    sdk = SkySDK(monkeypatch, spot=(("RUNNING", 0), ("RECOVERING", 1), ("RUNNING", 1), ("SUCCEEDED", 1)))
    cfg, plan, runs, sink = start_run(tmp_path, "vast", keep=False)
    plan.spot = True

    assert cloud_job.wait_spot(41, sink, runs, plan.run_id, sleep=lambda s: None) == "SUCCEEDED"
    assert all(c[1]["job_ids"] == [41] for c in sdk.named("jobs_queue"))
    assert sdk.named("job_status") == [] and sdk.named("down") == [] and sdk.named("tail_logs") == []
    assert runs.get(plan.run_id).artifacts["recoveries"] == 1
    assert "RECOVERING (recoveries: 1)" in (paths.run_dir(cfg.root, plan.run_id) / "train.log").read_text()


def test_down_of_a_spot_run_cancels_the_managed_job(monkeypatch, tmp_path):
    """`down RUN` of a spot run: sky.jobs.cancel with its job id; never sky.down of the name we gave it (the
    jobs controller names the cluster). The worker's ending is stood in for: it is another process."""
    from amigo_burst.lifecycle import teardown

    sdk = SkySDK(monkeypatch)
    cfg, plan, runs, sink = start_run(tmp_path, "vast", keep=False)
    run = runs.update(plan.run_id, status="RUNNING", job_id=41, artifacts={"spot": True})
    monkeypatch.setattr(teardown, "our_clusters", lambda prefix: [])
    ended = []

    def worker_records_the_end(cfg_, runs_, r):
        ended.append(r.reason)
        return runs_.update(r.id, status="STOPPED")

    monkeypatch.setattr(teardown, "reconcile_run", worker_records_the_end)
    lines = list(teardown.down(cfg, run.id, False, None))

    assert [c[1] for c in sdk.named("jobs_cancel")] == [{"job_ids": [41]}]
    assert sdk.named("down") == [] and sdk.named("job_status") == []
    assert ended == [teardown.STOP_REASON], "the worker's ending sees that `down` stopped it"
    assert any("managed job 41 cancelled" in ln for ln in lines) and ": STOPPED" in lines[-1]


@pytest.mark.badinput
def test_spot_refuses_without_s3_store_and_on_lambda(monkeypatch, tmp_path):
    sdk = SkySDK(monkeypatch)
    task = skyr.build_task(SKY / "vast.yaml", {"AMIGO_STORE_URI": ""}, {}, tmp_path)
    with pytest.raises(UserError, match="s3://"):
        sky_jobs.spot_launch(task, "amigo-x")
    task = skyr.build_task(SKY / "lambda-a100.yaml", {"AMIGO_STORE_URI": "s3://b/p"}, {}, tmp_path)
    with pytest.raises(UserError, match="no spot"):
        sky_jobs.spot_launch(task, "amigo-y")
    assert sdk.calls == []
