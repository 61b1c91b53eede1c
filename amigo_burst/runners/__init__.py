"""Runners: where a stage's task executes (`local`: subprocesses here; `sky`: SkyPilot)."""
