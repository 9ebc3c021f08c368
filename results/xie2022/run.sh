#!/bin/bash
# Makes results/xie2022 (see README.md): hidden-state variability ν per block, and the head placed
# at the lowest-ν block with the blocks below it tuned (fine-tuning and adapters) vs the same
# number of top blocks, on the packaged MiniLM-L6. Run from the repository root; re-running
# resumes (finished trials are kept).
set -euo pipefail
OUT=${OUT:-results/xie2022}
GLUE=${GLUE:-../shared/glue}
run() { python -m jaxtransfer.main "$@" --config.model=minilm-l6 --config.data_dir=$GLUE; }
# Selection: the head (Xie et al.'s MLP) on block argmin ν with m = 2 blocks tuned, vs the top 2
# blocks under a head on the last block, fine-tuning and adapters, and both methods on all blocks.
# For the 6 x 384 MiniLM: the token mean through the head (its [CLS] vector is weak below the top
# block), batch 16, 3 epochs with 6% warmup, lr 1e-4 (fine-tuning) / 1e-3 (adapters); the authors
# (RoBERTa-large): first token, batch 8, 20 epochs, 3e-4. Step times are measured in the run:
# nothing else may run on the machine meanwhile.
sel=(--config=configs/select.py --config.pooling=mean --config.batch_size=16 --config.num_epochs=3
     --config.learning_rate=1e-4 --config.adapter_learning_rate=1e-3 --config.seeds='(1,2,3)'
     --config.checkpoint_every=200)
# CoLA, the whole training set: ν is lowest at block 2, so the placements differ.
run "${sel[@]}" --workdir=$OUT/select-cola --config.task=cola --config.train_sizes='(0,)'
# SST-2, 2,000 examples: ν is lowest at the top block, so ν-placed and top-2 coincide.
run "${sel[@]}" --workdir=$OUT/select-sst2 --config.task=sst2 --config.train_sizes='(2000,)'
# CoLA, the head-position sweep: the head at every block (m = 2 fine-tuned; under a head at block
# 0, block 0 alone), 18 trials; every head at seed 1 first, then seeds 2-3 (the workdir resumes).
head=("${sel[@]}" --workdir=$OUT/head-cola --config.task=cola --config.train_sizes='(0,)'
      --config.head_block=3,4,1,0,2,5 --config.method=finetune --config.baselines=False)
run "${head[@]}" --config.seeds='(1,)'
run "${head[@]}" --config.seeds='(1,2,3)'
# ν per block of every task (each select run computes its own task's first): one frozen
# forward pass over each whole training split, length 128.
for task in sst2 cola mrpc rte; do
  run --config=configs/variability.py --workdir=$OUT/nu-$task --config.task=$task
done
python -m jaxtransfer.studies.xie2022.analysis $OUT $OUT/nu-{sst2,cola,mrpc,rte}
rm -rf $OUT/*/tensorboard $OUT/*/checkpoints
