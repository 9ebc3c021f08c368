#!/bin/bash
# Makes results/radiya2020 (see README.md): learned masks vs full fine-tuning, distances per block,
# and tuning only the most / least changed blocks, on the packaged MiniLM-L6 (SST-2, MRPC).
# Run from the repository root. Each run resumes if re-run on the same workdir.
set -euo pipefail
OUT=results/radiya2020
GLUE=${GLUE:-../shared/glue}
run() { flock /tmp/jaxtransfer-heavy.lock python -m jaxtransfer.main "$@"; }
# :minilm = 1,000 examples, 200 steps of batch 16, length 64, lr 1e-4, seeds 1-3.
# 1. Mask learning rate, seed 1, sparsity 0.1 (with full fine-tuning and head-only at seed 1).
run --config=configs/sparsity.py:minilm --workdir=$OUT/sst2 --config.data_dir=$GLUE \
    --config.task=sst2 --config.seeds='(1,)' --config.target_sparsity='(0.1,)' \
    --config.mask_learning_rate='(3e-3,1e-2,3e-2)'
# 2. SST-2: masks at three sparsities (mask lr 3e-2), full fine-tuning, head only; seeds 1-3.
#    Writes closeness.csv for every trial (the fine-tuned ones give the per-block distances).
run --config=configs/sparsity.py:minilm --workdir=$OUT/sst2 --config.data_dir=$GLUE \
    --config.task=sst2 --config.target_sparsity='(0.1,0.3,0.6)'
# 3. MRPC (a pair task; length 128, trimmed to the longest pair): the same at sparsity 0.1.
run --config=configs/sparsity.py:minilm --workdir=$OUT/mrpc --config.data_dir=$GLUE \
    --config.task=mrpc --config.max_seq_length=128 --config.target_sparsity='(0.1,)'
# 4. SST-2, critical blocks: rank by run 2's fine-tuned distances, tune r = 2 blocks.
run --config=configs/closeness.py:minilm --workdir=$OUT/sst2_critical --config.data_dir=$GLUE \
    --config.task=sst2 --config.rank_from=$OUT/sst2/closeness.csv --config.full_finetuning=False \
    --config.critical_r='(2,)'
rm -rf $OUT/*/tensorboard $OUT/*/checkpoints
