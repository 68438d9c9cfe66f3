#!/usr/bin/env sh
# Runs one shard of an evaluation, or resumes it when a retried pod or task finds its run
# directory from an earlier attempt. The shard index comes from the scheduler
# (JOB_COMPLETION_INDEX on Kubernetes, SLURM_ARRAY_TASK_ID on Slurm); the shard count from
# SHARDS. Failed samples (exit 1) are the evaluation's result, not the shard's failure: the merge
# reports them, so the shard exits 0 and the scheduler does not run it again.
#
#   SHARDS=4 RUN_ROOT=/runs/eval-42 RUN_FILE=run.yaml ./shard.sh
#
# LFEVAL_LIMITS=redis://HOST:6379, when set, makes the models' limits global across all shards.
set -u
: "${SHARDS:?set SHARDS to the number of shards}"
: "${RUN_ROOT:?set RUN_ROOT to the shared directory of this run}"
RUN_FILE="${RUN_FILE:-run.yaml}"
index="${JOB_COMPLETION_INDEX:-${SLURM_ARRAY_TASK_ID:?no shard index from the scheduler}}"
dir="$RUN_ROOT/shard-$index"

if [ -f "$dir/run_config.json" ]; then
    lfeval run --resume "$dir" --no-progress
else
    lfeval run -f "$RUN_FILE" --shards "$SHARDS" -o "$dir" --no-progress
fi
code=$?
[ "$code" -le 1 ] && exit 0
exit "$code"
