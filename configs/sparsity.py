"""Fine-tuning by learning binary masks over the pretrained weights (Radiya-Dixit & Wang 2020).

  python -m jaxtransfer.main --config=configs/sparsity.py --workdir=results/sparsity-rte \
      --config.model=bert-base-uncased --config.task=rte --config.data_dir=/path/to/glue
  python -m jaxtransfer.main --config=configs/sparsity.py:minilm --workdir=results/radiya2020/sst2 \
      --config.data_dir=/path/to/glue
  python -m jaxtransfer.main --config=configs/sparsity.py:demo --workdir=/tmp/sparsity-demo

What trains: per masked weight matrix (`masked_matrices`, default all six of a block) of the
masked blocks (`mask_blocks`: [] = all; [i, j] one set; [[..], [..]] a sweep of sets) a real-valued
score per entry. The forward pass multiplies the pretrained weight by a {0,1} mask that zeroes
the round(target_sparsity x size) lowest-scored entries of each matrix of each block (exact top-k);
the backward pass is straight-through (d mask / d score = 1, so dL/dscore = dL/d(w*mask) * w;
Piggyback, Zhao et al. 2020). Weights, biases, LayerNorms and embeddings never change; the pooler
and classifier train normally at `learning_rate`. The reported `sparsity` is the fraction of
masked-matrix entries set to zero (equal to the target up to rounding), with `sparsity/<matrix>`
per matrix.

Design choices (the paper's code is not public; docs/PROTOCOLS.md §4): a fixed top-k per matrix instead
of Zhao et al.'s fixed threshold, so that `target_sparsity` is exactly the sparsity reached
rather than an outcome of training. Scores start at |w| / mean|w| of their matrix: the first mask
is magnitude pruning at the target (the smallest weights go first, the least damage to the
pretrained function), and the unit scale makes one `mask_learning_rate` the same relative step in
every matrix and model. The scores' learning rate is much larger than a fine-tuning one (default
3e-2 on that unit scale, where the median score is ~0.85; no weight decay): on MiniLM / SST-2
(1,000 examples, 200 steps, sparsity 0.1, seed 1) 3e-3 / 1e-2 / 3e-2 gave 78.2 / 81.4 / 83.0 dev
accuracy (full fine-tuning 81.4, the head alone 54.8).

Also swept: `mask_learning_rate` (list). Composable with the other interventions in the same
trial: `frozen_blocks` (blocks below are frozen and unmasked), `reinit_blocks` (reinitialized in
`reinit_scheme` before masking: masks over random weights). `baselines` adds reference trials
at `learning_rate`: `finetune` (every parameter) and `head_only` (pooler + classifier on the
frozen encoder: what the masks add to it).

Workdir extras: `masks/<trial_id>.npz` (per matrix `<matrix>` = np.packbits of the flattened
(blocks, in, out) mask and `<matrix>.shape`; `blocks` = the block indices;
`jaxtransfer.studies.radiya2020.masks.load_masks` reads it); metrics `mask_bytes` (the packed masks),
`head_bytes` (pooler + classifier, float32) and `full_copy_bytes` (a fully fine-tuned copy);
`closeness.csv` (distance of the masked model from the pretrained one, see closeness.py);
plots/accuracy_vs_sparsity.png. `--config.export_model=True` writes the masked model (masks
multiplied in) to models/<trial_id>/.

MiniLM-L6, SST-2, 1,000 examples, 200 steps of batch 16, length 64, seeds 1-3 (see
results/radiya2020/README.md): full fine-tuning (lr 1e-4) vs masks at several sparsities.
The demo (~2 min) masks MiniLM on the built-in sentiment set at sparsity 0.05 and 0.5.
"""

from configs import base


def minilm(c):
  """The study's real run on 2 CPU cores: MiniLM-L6, 1,000 examples, 200 steps of batch 16 (3.2
  epochs), length 64, lr 1e-4 (full fine-tuning and the head), the token mean through the pooler
  (this sentence encoder's reading; its [CLS] vector is weak), seeds 1-3."""
  c.model = 'minilm-l6'
  c.pooling = 'mean'
  c.max_seq_length = 64
  c.batch_size = 16
  c.learning_rate = 1e-4
  c.num_train_steps = 200
  c.train_sizes = (1000,)
  c.seeds = (1, 2, 3)


def demo(c):
  base.demo(c)
  c.target_sparsity = (0.05, 0.5)
  c.num_train_steps = 40
  c.eval_max_examples = 128
  c.baselines = ()


def get_config(arg=None):
  c = base.get_config()
  c.experiment = 'sparsity'
  c.target_sparsity = (0.05, 0.2, 0.5)  # fraction of each masked matrix's entries set to zero
  c.mask_blocks = ()                    # [] = all blocks; [i, j, ...]; or [[...], [...]] to sweep
  c.masked_matrices = ('query', 'key', 'value', 'attention_output', 'intermediate', 'output')
  c.mask_learning_rate = (3e-2,)        # lr of the mask scores (unit scale, see above); swept
  c.frozen_blocks = 0                   # blocks [0, f) frozen and unmasked
  c.reinit_blocks = ()                  # blocks reinitialized before masking
  c.reinit_scheme = 'bert'
  c.baselines = ('finetune', 'head_only')  # also run full fine-tuning / only the head
  base.apply_preset(c, arg, {'demo': demo, 'minilm': minilm})
  return c
