"""The analysis: from the members' test-set predictions and trajectories, and the barrier tables, to the
metric tables, the claims and the figures (docs/design.md, "Measurements", "Claims", "Figures").

- `read`: the one Parquet reader, with its checks;
- `metrics`: the statistics, pure numpy functions (accuracy, calibration, diversity, the bootstrap);
- `tables`: the metric tables, assembled from the members' predictions;
- `estimates`, `claims`: statistics over independent units and their verdicts; the claims and their rules;
- `aggregate` (pandas only), `draw` (matplotlib, seaborn), `figures` (the registry of figures).

The layer rule: analysis imports numpy, pandas, pyarrow, matplotlib, seaborn and `coupledsgd.core`,
never torch, `coupledsgd.engine` or `coupledsgd.jobs`. The jobs that read and write the files are in
`coupledsgd.jobs.analysis`.
"""
