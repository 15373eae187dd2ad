"""The experiment core (docs/design.md, "Layers"): what an experiment is, without training anything.

Conditions, the dataset and model registries, the config (schema, checks, job shape, hash), the grid
of members, parent states and barrier pairs, the results layout, seeds, atomic files, the Parquet
format and the error types. It imports the standard library, yaml, jsonschema, numpy and pyarrow:
never torch, pandas or another coupledsgd package, so Snakemake plans a run without them.
"""
