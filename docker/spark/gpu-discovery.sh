#!/bin/sh
# Spark resource discovery script for GPUs (spark.worker.resource.gpu.discoveryScript): prints
# {"name": "gpu", "addresses": [...]} with the indexes from nvidia-smi when it exists (a container started with
# the NVIDIA runtime), else those listed in SPARK_FAKE_GPU_ADDRESSES (comma-separated, e.g. "0,1", to exercise
# GPU-aware scheduling without GPUs), else none.
set -eu
if command -v nvidia-smi >/dev/null 2>&1; then
  addresses=$(nvidia-smi --query-gpu=index --format=csv,noheader)
else
  addresses=$(printf '%s' "${SPARK_FAKE_GPU_ADDRESSES:-}" | tr ',' '\n')
fi
quoted=$(printf '%s\n' "$addresses" | tr -d ' \t\r' | sed -e '/^$/d' -e 's/.*/"&"/' | paste -sd, -)
printf '{"name": "gpu", "addresses": [%s]}\n' "$quoted"
