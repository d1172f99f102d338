#!/usr/bin/env bash
# The Slurm test (scale issue, item 5): starts a single-node Slurm from the distribution's
# packages (slurmctld, slurmd, munge), submits examples/slurm/sweep.sbatch as a job array
# of 3 tasks over scenarios/policies-regression.yaml, merges the shards with `epsim merge`
# and checks that the result is byte-identical to the unsharded run.
# Needs root (to run the daemons) and, without Slurm installed, apt; .ci/run calls it.
# Usage: ci/slurm-sweep-test.sh   (about a minute once the release binary is built)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
if ! command -v slurmctld > /dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge > /dev/null
fi
cargo build --release --quiet
work=$(mktemp -d)
conf="$work/slurm.conf"
host=$(hostname -s)
cpus=$(nproc)
cat > "$conf" <<CONF
ClusterName=epsim-ci
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
NodeName=$host CPUs=$cpus State=UNKNOWN
PartitionName=ci Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
mkdir -p "$work/state" "$work/spool"
export SLURM_CONF="$conf"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
    # The daemons write their state as they stop: wait for them before removing it.
    for p in "${pids[@]}"; do wait "$p" 2> /dev/null || true; done
    rm -rf "$work" || true
}
trap cleanup EXIT
if ! pgrep -x munged > /dev/null; then
    mkdir -p /run/munge && chown munge:munge /run/munge
    su -s /bin/sh munge -c munged
fi
slurmctld -D -f "$conf" > "$work/ctld.out" 2>&1 & pids+=($!)
slurmd -D -f "$conf" > "$work/d.out" 2>&1 & pids+=($!)
for _ in $(seq 60); do
    sinfo -h -o %T 2> /dev/null | grep -q idle && break
    sleep 1
done
sinfo -h -o %T | grep -q idle || { cat "$work"/*.log; echo "slurm did not come up"; exit 1; }

scenario=scenarios/policies-regression.yaml
out="$work/submit"
mkdir -p "$out/out/shards"
cp -r examples scenarios topologies models "$out/"
cd "$out"
export PATH="${CARGO_TARGET_DIR:-$repo/target}/release:$PATH"
job=$(sbatch --parsable --array=1-3 --cpus-per-task=1 examples/slurm/sweep.sbatch "$scenario")
echo "submitted job array $job"
for _ in $(seq 300); do
    [ -z "$(squeue -h -j "$job" 2> /dev/null)" ] && break
    sleep 1
done
[ -z "$(squeue -h -j "$job")" ] || { echo "the job array did not finish"; exit 1; }
epsim merge out/shards/shard-* --out merged
epsim run "$scenario" -j 2 --no-progress --out whole > /dev/null 2>&1
cmp merged/summary.csv whole/summary.csv
echo "ok: 3 Slurm array tasks merged into exactly the unsharded summary.csv ($(wc -l < whole/summary.csv) lines)"
