"""The engine: data, models, k members as one network, the training loop, spawning, in-job
checkpoints and the barrier arithmetic.

Layer rule: engine modules import torch and `coupledsgd.core`, never `coupledsgd.analysis` or
`coupledsgd.jobs`.
"""
