"""The shared training entrypoint: `python -m train --stage N ...`.

Runs on every target (laptop, RunPod, Vast.ai, Lambda, Slurm) from a synced
copy of this folder, so it never imports amigo_burst: everything it needs
comes from its arguments and environment.
"""
