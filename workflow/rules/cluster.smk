# Rules that run in the Snakemake process itself, never as cluster jobs: the target rule, the
# concatenation of the per-parent barrier tables, the claims and the figures (each reads a few small
# tables).
# `metrics` is not here: at paper scale it reads every member's test-set logits and bootstraps them.
localrules:
    all,
    barriers,
    claims,
    figure,
