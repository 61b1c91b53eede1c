"""Where a stage's task executes: `local` (the YAML's setup/run as subprocesses here) or `sky`
(SkyPilot's Python SDK: RunPod, Vast.ai, Lambda, Slurm).

Owns process and SDK calls, one thin wrapper each. Imports only the shared vocabulary
(errors, secrets, clouds); never state, planning, lifecycle or cli. `import sky` (~2.6 s)
happens inside the functions that need it.

    local.py          run_task / run_step / stop
    sky.py            build the task, launch, tail, job status, rsync down, down, clusters, spot, check
    sky_optimizer.py  SkyPilot's optimizer offline (no API server, no credentials): what it would rent
"""
