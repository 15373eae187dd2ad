#!/usr/bin/env bash
# The smoke config (configs/smoke.yaml) through a real one-node SLURM cluster and the workflow's SLURM
# profile (workflow/profiles/slurm, snakemake-executor-plugin-slurm), checked against a local run.
#
#   bash tests/slurm/run_slurm_test.sh     (from .ci/run, after pytest; needs root and apt-get;
#                                          about 3 minutes on 2 cores)
#
# 1. installs Debian's slurmctld, slurmd, munge and slurm-client where they are missing, and the
#    executor plugin where it is missing;
# 2. starts a private munged, slurmctld and slurmd (own key, socket, ports, state folder under a temp
#    folder; no SLURM accounting), one node named localhost with this machine's CPUs;
# 3. runs the smoke config (with tests/slurm/smaller.yaml laid over it: one parent, one spawn step,
#    three conditions; 11 cluster jobs) to its metric tables, barrier table and one figure, with
#    `--profile profiles/slurm --slurm-status-command squeue`, in a temp copy of the workflow (as
#    tests/test_workflow.py does). Snakemake then also loads the workflow profile profiles/default,
#    whose local-run GPU cap must not hold back the cluster: the node offers 4 (fake) GPUs, and the
#    training and barrier jobs ask for one each (--set-resources), as they do with `device: cuda`;
# 4. checks that every job of a non-local rule went through sbatch (one kept SLURM log per job, one
#    submission per job in slurmctld's log and in Snakemake's output), no local rule's job did, and
#    that GPU jobs were queued or running side by side (submission-to-completion intervals in
#    slurmctld's log overlap), not one at a time;
# 5. runs the training jobs of the same config locally and checks every prediction Parquet file has the
#    same key columns and bit-identical logits;
# 6. stops the daemons it started (by their PIDs) and cancels any job left in its private queue.
#
# Every wait is bounded (timeout). Exit 0 with a line starting SKIPPED only when the SLURM daemons
# cannot be installed here (not root, no apt-get, apt-get fails); any other failure, the daemons not
# starting included, is an error (exit 1).
# KEEP=1 keeps the temp folder (logs, both runs) for inspection.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
START=$SECONDS
log() { printf '[slurm-test %3ds] %s\n' "$((SECONDS - START))" "$*"; }
skip() { echo "SKIPPED (SLURM test): $*"; exit 0; }
fail() { echo "FAILED (SLURM test): $*" >&2; exit 1; }

# ---- 1. packages -----------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
        || ! command -v sbatch >/dev/null; then
    [ "$(id -u)" = 0 ] || skip "slurmctld/slurmd/munge are not installed and installing them needs root"
    command -v apt-get >/dev/null || skip "slurmctld/slurmd/munge are not installed and there is no apt-get"
    log "installing slurmctld slurmd munge slurm-client (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get update -qq >/dev/null 2>&1 || skip "apt-get update failed or timed out"
    timeout 600 apt-get install -y -qq slurmctld slurmd munge slurm-client >/dev/null 2>&1 \
        || skip "apt-get install slurmctld slurmd munge slurm-client failed or timed out"
fi
[ "$(id -u)" = 0 ] || skip "starting slurmd (which launches jobs as their users) needs root"
if ! python -c "import snakemake_executor_plugin_slurm" 2>/dev/null; then
    log "installing snakemake-executor-plugin-slurm (pip)"
    timeout 300 python -m pip install -q snakemake-executor-plugin-slurm \
        || fail "pip install snakemake-executor-plugin-slurm failed"
fi

# ---- 2. a private one-node cluster ------------------------------------------------------------------
WORK="$(mktemp -d /tmp/coupledsgd-slurm.XXXXXX)"
chmod 755 "$WORK"
PIDS=()
cleanup() {
    local rc=$?
    if [ -n "${SLURM_CONF:-}" ] && [ -f "$SLURM_CONF" ]; then
        timeout 10 scancel --full --user="$(id -un)" >/dev/null 2>&1 || true
    fi
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null || true
    done
    if [ "$rc" != 0 ]; then
        echo "--- last lines of the logs in $WORK ---" >&2
        tail -n 30 "$WORK"/log/*.log "$WORK"/slurm-run.out 2>/dev/null >&2 || true
    fi
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$WORK"/{munge,state,spool,log}
id munge >/dev/null 2>&1 || skip "no munge user (munge package incomplete)"
# munged insists its socket folder and key belong to its user, the folder is not writable by others
# and the socket reachable by all.
dd if=/dev/urandom of="$WORK/munge/munge.key" bs=1024 count=1 status=none
chown -R munge: "$WORK/munge"; chmod 755 "$WORK/munge"; chmod 400 "$WORK/munge/munge.key"
MUNGE_SOCKET="$WORK/munge/munge.socket"
runuser -u munge -- munged --foreground --socket="$MUNGE_SOCKET" --key-file="$WORK/munge/munge.key" \
    --pid-file="$WORK/munge/munged.pid" --log-file="$WORK/munge/munged.log" \
    --seed-file="$WORK/munge/munged.seed" >"$WORK/log/munged.log" 2>&1 &
PIDS+=($!)

CPUS="$(nproc)"
# Memory is not enforced here (no cgroups); config_overrides makes slurmd report the configured
# RealMemory, so the profile's --mem requests (up to 16 GB) fit on a smaller test machine too.
MEM_MB="$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)"
[ "$MEM_MB" -lt 32000 ] && MEM_MB=32000
# The plugin polls with squeue only while MinJobAge >= 3 x the seconds before its first status check
# (otherwise it falls back to sacct, which fails without accounting): 2 s here, MinJobAge 60 s.
INIT_SECONDS=2
export SLURM_CONF="$WORK/slurm.conf"
cat >"$SLURM_CONF" <<EOF
ClusterName=coupledsgd-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=${SLURMCTLD_PORT:-16817}
SlurmdPort=${SLURMD_PORT:-16818}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
MpiDefault=none
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$WORK/log/slurmctld.log
SlurmdLogFile=$WORK/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
SchedulerParameters=sched_interval=2
GresTypes=gpu
MinJobAge=$((30 * INIT_SECONDS))
ReturnToService=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:4 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
# Four fake GPUs (empty files standing for device files): enough for SLURM to accept and place jobs
# that ask for one; the smoke config trains on the CPU whatever they are given.
touch "$WORK"/fakegpu{0,1,2,3}
cat >"$WORK/gres.conf" <<EOF
AutoDetect=off
NodeName=localhost Name=gpu File=$WORK/fakegpu[0-3]
EOF

for _ in $(seq 50); do [ -S "$MUNGE_SOCKET" ] && [ -s "$WORK/munge/munged.pid" ] && break; sleep 0.2; done
[ -S "$MUNGE_SOCKET" ] || fail "munged did not start: $(tail -n 3 "$WORK/log/munged.log" "$WORK/munge/munged.log" 2>/dev/null)"
# munged itself runs under runuser: stop it first, by the PID it wrote, then runuser.
PIDS=("$(cat "$WORK/munge/munged.pid")" "${PIDS[@]}")
slurmctld -D -f "$SLURM_CONF" >"$WORK/log/slurmctld.out" 2>&1 &
PIDS+=($!)
slurmd -D -N localhost -f "$SLURM_CONF" >"$WORK/log/slurmd.out" 2>&1 &
PIDS+=($!)
log "waiting for the node (munged, slurmctld, slurmd started: PIDs ${PIDS[*]})"
state=""
for _ in $(seq 60); do
    state="$(timeout 5 sinfo --noheader --format=%T 2>/dev/null | head -n1 || true)"
    [ "$state" = idle ] && break
    sleep 1
done
[ "$state" = idle ] || fail "the SLURM node did not come up (state '${state:-none}'): $(tail -n 5 "$WORK/log/slurmctld.log" "$WORK/log/slurmd.log" 2>/dev/null)"
log "one-node SLURM up: $CPUS CPUs, partition debug"

# ---- 3. the smoke workflow through SLURM --------------------------------------------------------------
# The slurm-jobstep plugin strips every SLURM_* variable but a few before its inner `srun`, SLURM_CONF
# included; on a real cluster srun finds /etc/slurm/slurm.conf (or its configless cache), here it would
# find nothing. This srun puts our private config back; it is on PATH only for this test.
mkdir -p "$WORK/bin"
printf '#!/bin/sh\nexport SLURM_CONF="%s"\nexec "%s" "$@"\n' "$SLURM_CONF" "$(command -v srun)" >"$WORK/bin/srun"
chmod +x "$WORK/bin/srun"
export PATH="$WORK/bin:$PATH"
CONFIGS=(configs/smoke.yaml "$ROOT/tests/slurm/smaller.yaml")
TARGETS=(results/smoke/metrics/summary.csv results/smoke/metrics/barriers.parquet
         results/smoke/figures/fig1b_accuracy_gain_reset.png)
copy_workflow() {
    mkdir -p "$1"
    for name in Snakefile config.yaml configs workflow envs profiles; do cp -r "$ROOT/$name" "$1/"; done
}
copy_workflow "$WORK/slurm"
copy_workflow "$WORK/local"
cd "$WORK/slurm"
# Jobs per rule, and the local rules (workflow/rules/cluster.smk), before anything runs.
# The GPU rules ask for one GPU each, as with `device: cuda` (the plugin turns it into --gpus=1).
GPU_JOBS=(parent_state:gpu=1 train_members:gpu=1 barrier:gpu=1)
timeout 120 snakemake -n --profile profiles/slurm "${TARGETS[@]}" --configfile "${CONFIGS[@]}" \
    >"$WORK/dryrun.out" 2>&1 || { cat "$WORK/dryrun.out"; fail "dry run failed"; }
log "running the smoke workflow through sbatch"
timeout "${SNAKEMAKE_TIMEOUT:-600}" snakemake --profile profiles/slurm --set-resources "${GPU_JOBS[@]}" \
    --slurm-status-command squeue --slurm-init-seconds-before-status-checks "$INIT_SECONDS" \
    --slurm-keep-successful-logs --slurm-no-account --local-cores "$CPUS" \
    "${TARGETS[@]}" --configfile "${CONFIGS[@]}" >"$WORK/slurm-run.out" 2>&1 \
    || { tail -n 60 "$WORK/slurm-run.out"; fail "snakemake with the SLURM profile failed (or timed out)"; }
SLURM_SECONDS=$((SECONDS - START))
log "SLURM run finished"

# ---- 5. the same trainings locally ------------------------------------------------------------------
cd "$WORK/local"
timeout 600 snakemake --cores "$CPUS" --until train_members --configfile "${CONFIGS[@]}" \
    >"$WORK/local-run.out" 2>&1 || { tail -n 40 "$WORK/local-run.out"; fail "local run failed"; }
log "local run finished"

# ---- 4 and 5: checks ------------------------------------------------------------------------------------
timeout 300 python - "$WORK" "$ROOT" <<'EOF'
import re
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

work, root = Path(sys.argv[1]), Path(sys.argv[2])
# `localrules:` and its names, on one line or (as snakefmt writes it) one name a line
declared = re.search(r"^localrules:((?:[^\n]*\n?)(?:[ \t]+[^\n]*\n?)*)", (root / "workflow/rules/cluster.smk").read_text(), re.M)
local_rules = {r.strip() for r in declared.group(1).split(",") if r.strip()} if declared else set()
assert local_rules, "workflow/rules/cluster.smk declares no localrules"

dry = (work / "dryrun.out").read_text()
planned = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", dry, re.M) if m.group(1) != "total"}
remote = {rule: n for rule, n in planned.items() if rule not in local_rules}
assert set(planned) >= {"prepare_data", "parent_state", "train_members", "metrics", "barrier"}, planned

# One kept SLURM log per submitted job: .snakemake/slurm_logs/rule_<rule>/<wildcards>/<slurm job id>.log
logs = sorted((work / "slurm/.snakemake/slurm_logs").glob("rule_*/**/*.log"))
submitted = {}
for path in logs:
    rule = path.relative_to(work / "slurm/.snakemake/slurm_logs").parts[0].removeprefix("rule_")
    submitted[rule] = submitted.get(rule, 0) + 1
run = (work / "slurm-run.out").read_text()
sbatch_ids = re.findall(r"has been submitted with SLURM jobid (\d+)", run)
ctld = (work / "log/slurmctld.log").read_text()
ctld_ids = set(re.findall(r"_slurm_rpc_submit_batch_job: JobId=(\d+)", ctld))
done_ids = set(re.findall(r"_job_complete: JobId=(\d+) done", ctld))
hint = " (is workflow/rules/cluster.smk included in the Snakefile?)" if set(submitted) & local_rules else ""
assert submitted == remote, f"jobs per rule through sbatch {submitted} != planned non-local jobs {remote}{hint}"
assert len(sbatch_ids) == len(set(sbatch_ids)) == sum(remote.values()), (len(sbatch_ids), remote)
assert set(sbatch_ids) <= ctld_ids and set(sbatch_ids) <= done_ids, "slurmctld did not see every job complete"
for rule in local_rules & set(planned):
    assert re.search(rf"localrule {rule}:", run), f"{rule} did not run as a local rule"
print(f"sbatch submissions: {sum(submitted.values())} jobs {dict(sorted(submitted.items()))}; "
      f"local: {sorted(local_rules & set(planned))}")

# --profile profiles/slurm loads profiles/default too; its GPU cap is for local runs only. Each GPU job
# is queued or running from its submission to its completion: several of those intervals must overlap.
assert "workflow specific profile" in run, "the run did not load profiles/default beside profiles/slurm"
gpu_rules = {"parent_state", "train_members", "barrier"}
gpu_ids = {path.stem for path in logs
           if path.relative_to(work / "slurm/.snakemake/slurm_logs").parts[0].removeprefix("rule_") in gpu_rules}
stamp = r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)\] "
begin = {i: t for t, i in re.findall(stamp + r"_slurm_rpc_submit_batch_job: JobId=(\d+)", ctld, re.M)}
end = {i: t for t, i in re.findall(stamp + r"_job_complete: JobId=(\d+) done", ctld, re.M)}
events = sorted([(begin[i], 1) for i in gpu_ids] + [(end[i], -1) for i in gpu_ids], key=lambda e: (e[0], e[1]))
at_once = most = 0
for _, step in events:
    at_once += step
    most = max(most, at_once)
assert len(re.findall(r"gpu=1", run)) >= len(gpu_ids), "the GPU jobs did not ask for a GPU"
assert most >= 2, f"GPU jobs went through SLURM one at a time ({len(gpu_ids)} jobs): a GPU cap held them back"
print(f"GPU jobs: {len(gpu_ids)}, at most {most} queued or running at once")

# Predictions: same files, same key columns, bit-identical logits.
a_dir, b_dir = work / "slurm/results/smoke/predictions", work / "local/results/smoke/predictions"
a_files = sorted(p.relative_to(a_dir) for p in a_dir.rglob("*.parquet"))
b_files = sorted(p.relative_to(b_dir) for p in b_dir.rglob("*.parquet"))
assert a_files == b_files and len(a_files) == 2 * planned["train_members"]  # 1 parent x 2 children a job, (len(a_files), len(b_files))
identical_bytes = 0
for rel in a_files:
    a, b = pq.read_table(a_dir / rel), pq.read_table(b_dir / rel)
    assert a.column_names == b.column_names, rel
    for name in a.column_names:
        x, y = a.column(name).to_numpy(), b.column(name).to_numpy()
        if x.dtype.kind == "f":
            assert np.array_equal(x.view(np.uint32), y.view(np.uint32)), f"{rel}: {name} differs"
        else:
            assert (x == y).all(), f"{rel}: {name} differs"
    identical_bytes += (a_dir / rel).read_bytes() == (b_dir / rel).read_bytes()
for name in ("members", "ensembles", "pairs", "forgetting", "barriers"):
    assert (work / f"slurm/results/smoke/metrics/{name}.parquet").exists(), name
assert (work / "slurm/results/smoke/figures/fig1b_accuracy_gain_reset.png").stat().st_size > 1000
print(f"predictions: {len(a_files)} files, logits bit-identical to the local run "
      f"({identical_bytes} of {len(a_files)} files byte-identical)")
EOF
log "PASSED: smoke workflow through SLURM in ${SLURM_SECONDS}s, $((SECONDS - START))s in all"
