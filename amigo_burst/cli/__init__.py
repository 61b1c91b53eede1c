"""The command line: the typer app, one module per command group, and all rendering (rich).

Owns parsing options and drawing tables, bars and one-line errors; no logic a test could not
call without a terminal. May import everything below it (lifecycle, planner, planning, state,
runners and the shared vocabulary); nothing imports this package except the console script.

    app.py     the typer app, --config, UserError -> one red line + exit 2, command registration
    info.py    stages, targets, config check, doctor
    plan.py    estimate, plan, report
    runs.py    launch, logs, status, download, down, pipeline
    render.py  run tables and run details
"""
