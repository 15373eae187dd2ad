"""The jobs: the stage entry points the workflow scripts call (`stages`, `barriers`), and what every
job shares (`runtime`: log, threads and device, the one-line exit; `devices`: the GPU pool).

Layer rule: jobs import `coupledsgd.core` and `coupledsgd.engine`; nothing below them imports jobs.
"""
