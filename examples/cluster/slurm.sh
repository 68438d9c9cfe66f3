#!/usr/bin/env bash
# One evaluation as a Slurm job array: each array task is one shard, the run directories live on
# the cluster's shared file system, and the merge runs once every task has ended.
#
#   jid=$(sbatch --parsable examples/cluster/slurm.sh)
#   sbatch --dependency=afterany:"$jid" --wrap \
#       "lfeval merge runs/slurm-$jid/shard-* --output runs/slurm-$jid/merged -f run.yaml"
#
# The array indices must be 0 to SHARDS-1. With LFEVAL_LIMITS pointing at a Redis every node can
# reach, the models' limits hold for all tasks together; without it each task has the whole
# limit to itself (divide rate_limit by the number of shards running at once).
#SBATCH --job-name=lfeval
#SBATCH --array=0-3
#SBATCH --cpus-per-task=2
#SBATCH --mem=2G
#SBATCH --time=12:00:00
#SBATCH --output=lfeval-%A-%a.log
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-.}"
export SHARDS=4
export RUN_ROOT="runs/slurm-${SLURM_ARRAY_JOB_ID}"
export RUN_FILE=run.yaml
# export LFEVAL_LIMITS=redis://limits.cluster.internal:6379
mkdir -p "$RUN_ROOT"
exec examples/cluster/shard.sh             # or wherever you keep shard.sh
