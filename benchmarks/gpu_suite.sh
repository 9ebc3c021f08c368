#!/usr/bin/env bash
# The GPU suite in one call (benchmarks/gpu_suite.py): Tamkin's setting as trials per hour against
# HF PyTorch in a row and 4 concurrent HF processes, bf16 MFU, the largest trial group, real SST-2;
# one table, appended to benchmarks/RESULTS.md. --smoke: the same code paths, tiny, on CPU.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec "${PYTHON:-python3}" benchmarks/gpu_suite.py "$@"
