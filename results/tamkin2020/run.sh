#!/bin/bash
# Makes results/tamkin2020 (see README.md): Tamkin et al.'s probes, progressive reinit, block
# reinit / preserve and layer permutations on the packaged MiniLM-L6 (SST-2, CoLA). Run from the
# repository root; re-running resumes (finished trials are kept, a group in flight restarts from
# its last checkpoint).
set -euo pipefail
OUT=${OUT:-results/tamkin2020}
GLUE=${GLUE:-../shared/glue}
# The paper's protocol (3 epochs, length 128, no warmup, no weight decay, clip 1.0, each seed its
# own random training subset) except, for the 6 x 384 MiniLM, batch 16 and lr 1e-4 (as in
# results/lee2019; the paper: batch 8, 2e-5 for BERT-base) and the token mean through the pretrained
# pooler (this sentence encoder's [CLS] vector is weak below its top block).
run() { python -m jaxtransfer.main "$@" --config.model=minilm-l6 --config.data_dir=$GLUE \
            --config.pooling=mean; }
# Fine-tuning checkpoints every 200 steps (a group in flight resumes from there); the probes keep
# probe.py's rare checkpoints (their steps are tiny and many).
train=(--config.batch_size=16 --config.learning_rate=1e-4 --config.num_epochs=3
       --config.checkpoint_every=200)
for task in sst2 cola; do
  # Linear probes of every k: the full training set, 40 epochs of batch 8 as in the paper, lr 1e-3
  # (2e-5 barely moves a linear probe in that budget), eval-mode features.
  run --config=configs/probe.py --workdir=$OUT/$task/probe --config.task=$task \
      --config.seeds='(1,2,3)' --config.learning_rate=1e-3
done
# SST-2, blocks >= k reinitialized for every k = 0..6: 500 examples (seeds 1-5) and 5,000 (1-3).
run --config=configs/reinit.py --workdir=$OUT/sst2/reinit --config.task=sst2 "${train[@]}" \
    --config.train_sizes='(500,5000)' --config.small_size_seeds=5 --config.probe_dir=$OUT/sst2/probe
# SST-2 from scratch (every block, the embeddings and the pooler reinitialized: the floor k = 0
# lacks), at the same sizes and seeds.
run --config=configs/reinit.py --workdir=$OUT/sst2/scratch --config.task=sst2 "${train[@]}" \
    --config.train_sizes='(500,5000)' --config.small_size_seeds=5 --config.ks='()' \
    --config.scratch=True
# SST-2, 3-block windows reinitialized / alone preserved, with the full and all-reinit references;
# 2,000 examples (the paper: 5,000), seeds 1-3.
run --config=configs/block_reinit.py --workdir=$OUT/sst2/block_reinit --config.task=sst2 \
    "${train[@]}" --config.train_sizes='(2000,)' --config.seeds='(1,2,3)'
# SST-2, permutations p = 1..5 at 500 and 2,000 examples (the rank correlation between the sizes
# in permute_correlations.csv), seeds 1-3, with the full and all-reinit references.
run --config=configs/permute.py --workdir=$OUT/sst2/permute --config.task=sst2 "${train[@]}" \
    --config.train_sizes='(500,2000)' --config.seeds='(1,2,3)' --config.permutation_seeds='(1,2,3,4,5)'
# CoLA, the whole training set (1,603 steps a trial, ~20 CPU-minutes), k = 0, 2, 4, 6, seeds 1-3.
run --config=configs/reinit.py --workdir=$OUT/cola/reinit --config.task=cola "${train[@]}" \
    --config.train_sizes='(0,)' --config.seeds='(1,2,3)' --config.ks='(0,2,4,6)' \
    --config.probe_dir=$OUT/cola/probe
python -m jaxtransfer.studies.tamkin2020.analysis --out=$OUT $OUT/sst2/* $OUT/cola/*
rm -rf $OUT/*/*/tensorboard $OUT/*/*/checkpoints
