"""Evaluation: the harness (`harness.run_eval`), the append-only results store (`results`), statistics
(`stats`), tables (`report`), plots (`plots`), ablations (`ablations`), the run report (`summary`), and
speed/memory measurements (`speed`, `memory`). Submodules are imported on use so that importing
`tinytrain.bench` stays cheap (no matplotlib until a plot is drawn)."""
