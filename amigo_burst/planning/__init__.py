"""Pure planning arithmetic over data: no I/O beyond reading the shipped tables, no torch, no sky.

Owns the hardware tables (models.csv, gpus.csv), the estimator (memory, speed, hours, dollars),
prices read from SkyPilot catalog files or the shipped snapshot, calibration from past runs, the
stage x target matrix with its strategies, report building and the units of its text.
Imports only the shared vocabulary (errors) and itself; never state, runners, lifecycle or cli.

    hardware.py     models.csv -> ModelArch, gpus.csv -> GpuSpec, names SkyPilot and torch use
    estimate.py     fits? peak VRAM, tokens/s, hours, $ for one model x GPU x workload
    pricing.py      $/h per (cloud, accelerator, count): SkyPilot's catalogs, else a real-row snapshot; electricity
    calibration.py  past runs -> per (GPU, method) corrections
    matrix.py       options (each target's GPU menu) x stages -> cells; the best cell within limits
    strategies.py   the plan: recommended machine per stage, five strategies that add up, stage 1's ways out
    compare.py      the original analysis beside the computed plan
    report.py       estimated vs actual rows, per stage, totals, and their table/md/json renderings
    report_html.py  the report page with its SVG charts
    units.py        parameter counts, hours and dollars as short text
"""
