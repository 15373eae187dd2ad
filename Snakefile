# Coupled SGD: train parents to spawn steps t, spawn k children from each, and measure how much
# diversity (and ensemble gain) survives the coupling. See README.md and DESIGN notes there.

configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/figures.smk"


rule all:
    input:
        predictions=all_member_outputs("predictions"),
        trajectories=all_member_outputs("trajectories"),
    default_target: True
