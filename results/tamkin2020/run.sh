#!/bin/bash
# Makes results/tamkin2020 (see README.md): probes + progressive reinit on the packaged MiniLM,
# SST-2 and CoLA. Run from the repository root. Each run resumes if re-run on the same workdir.
set -euo pipefail
OUT=results/tamkin2020
GLUE=${GLUE:-../shared/glue}
run() { flock /tmp/jaxtransfer-heavy.lock python -m jaxtransfer.main "$@"; }
for task in sst2 cola; do
  len=48; [ "$task" = cola ] && len=32   # 99.5% of SST-2 train / 98% of dev fit in 48; CoLA in 32
  common=(--config.model=minilm-l6 --config.task=$task --config.data_dir=$GLUE
          --config.max_seq_length=$len --config.seeds='(1,2,3)')
  # Linear probes, 40 epochs of batch 8 as in the paper but lr 1e-3 (see README): on the token
  # mean through the pooler over the full training set, and on [CLS] through the pooler (the
  # authors' probe) at 2,000 examples.
  run --config=configs/probe.py --workdir=$OUT/$task/probe "${common[@]}" \
      --config.pooling=mean --config.learning_rate=1e-3
  run --config=configs/probe.py --workdir=$OUT/$task/probe_cls "${common[@]}" \
      --config.train_sizes='(2000,)' --config.learning_rate=1e-3
  # Progressive reinit, every k = 0..6, 500 and 2,000 examples, a fixed budget of 64 steps of
  # batch 16 (1,024 examples: ~2 epochs of 500, half an epoch of 2,000), lr 5e-5.
  run --config=configs/reinit.py --workdir=$OUT/$task/reinit "${common[@]}" \
      --config.train_sizes='(500,2000)' --config.small_size_seeds=0 \
      --config.batch_size=16 --config.num_train_steps=64 --config.learning_rate=5e-5 \
      --config.probe_dir=$OUT/$task/probe
done
python -m jaxtransfer.analysis.tamkin --out=$OUT $OUT/sst2/probe $OUT/sst2/probe_cls \
    $OUT/sst2/reinit $OUT/cola/probe $OUT/cola/probe_cls $OUT/cola/reinit
rm -rf $OUT/*/*/tensorboard $OUT/*/*/checkpoints
