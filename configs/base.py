"""Keys every experiment shares (docs/CONTRACT.md); each config file starts from
`base.get_config()`."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.experiment = 'finetune'
  # Model and data.
  c.model = 'bert-base-uncased'    # hub id, local HF directory, or minilm-l6 (packaged MiniLM)
  c.task = 'sst2'                  # cola sst2 mrpc stsb qqp mnli qnli rte wnli, or custom (below)
  c.data_dir = ''                  # GLUE-format root; '' = the hub (datasets); 'demo' = built-in set
  c.data_fingerprint = ''          # '' = unchecked; else the data must hash to it (configs/rerun.py)
  # Your own data (task=custom): local files, the format following the extension (.csv; .tsv is
  # tab-separated without quoting, as GLUE; .json/.jsonl; .parquet), or a hub dataset.
  c.train_file = ''
  c.dev_file = ''
  c.dataset = ''                   # hub id instead of files, with its config and split names
  c.dataset_config = ''
  c.train_split = 'train'
  c.dev_split = 'validation'
  c.text_fields = 'text'           # one column, or two comma-separated: premise,hypothesis
  c.label_field = 'label'          # strings/integers: classes (train split's, sorted); floats: scores
  c.label_type = 'auto'            # auto, classification or regression
  c.metric = 'auto'                # auto (accuracy; spearman for regression), f1, mcc, pearson, ...
  c.cache_dir = ''                 # tokenized data; '' = $JAXTRANSFER_CACHE or ~/.cache/jaxtransfer
  c.max_seq_length = 128
  # Trials: the grid seeds x train_sizes x the experiment's sweep keys.
  c.seeds = (1, 2, 3)
  c.train_sizes = (0,)             # 0 = the whole training set
  # Optimisation (AdamW, linear decay, as in the papers).
  c.batch_size = 32
  c.learning_rate = 2e-5
  c.num_epochs = 3.0
  c.num_train_steps = 0            # > 0 overrides num_epochs
  c.warmup_ratio = 0.0
  c.warmup_steps = 0
  c.weight_decay = 0.0
  c.adam_b1 = 0.9
  c.adam_b2 = 0.999
  c.adam_eps = 1e-8
  c.max_grad_norm = 1.0
  # The protocol a reviewer accepts: a learning-rate grid per setting, chosen on held-out
  # training data (never on the dev set that is reported), failed runs counted.
  c.learning_rates = ()            # a sweep axis; () = the single learning_rate
  c.selection_split = 0.0          # held out of training: a fraction (< 1) or a count; 0 = off
  c.selection_seed = 0             # which examples the selection split holds out
  c.exclude_degenerate = False     # leave degenerate trials (majority-class) out of the means
  c.layer_lr_decay = 1.0           # block i of L at lr x d^(L - i), embeddings d^(L + 1); 1.0 = off
  # Model structure shared by every experiment.
  c.head = 'auto'                  # auto (BERT: pooler + linear; RoBERTa, MPNet: dense-tanh-linear;
                                   # DistilBERT, ELECTRA, DeBERTa, ModernBERT: their own head), pooler, mlp
  c.pooling = 'auto'               # auto (mean for a sentence-transformers folder whose
                                   # 1_Pooling says mean, else cls), cls (first token), or mean
  c.dtype = 'float32'              # compute dtype (params stay fp32): float32 or bfloat16
  c.remat = 'none'                 # none, or block: recompute tuned blocks in the backward pass
  # Evaluation.
  c.eval_max_examples = 0          # 0 = the whole dev set
  c.eval_batch_size = 128
  c.eval_every = 0                 # steps; 0 = once, after the last step
  c.select_best = False            # report the best periodic evaluation (by the task's metric)
  # Running.
  c.trials_per_program = 0         # trials per compiled group; 0 = 1 on CPU, else as many as fit
  c.pack_sequences = True          # a step's examples end to end in rows of one width (the longest
                                   # example up to 4x it, the cheapest on the data; same outputs)
  c.sparse_embeddings = True       # the word table trains as the rows the trial's data reaches
                                   # (the same AdamW when no weight decay is on it; else dense)
  c.compile_ahead = True           # the next program's step compiles while this one trains
  c.pad_to_multiple_of = 16        # row width (packed) or each step's width (not packed): the
                                   # longest row, rounded up; 0 = full width
  c.group_by_length = False        # HF's length-grouped sampling (changes the data order)
  c.log_every = 20                 # steps between log lines / progress updates
  c.checkpoint_every = 500         # steps between checkpoints of the group in flight (and SIGTERM)
  c.export_model = False           # write models/<trial_id>/ in HF format
  # Linear CKA per layer between the pretrained model and each fine-tuned trial, over the real
  # tokens of the first `similarity_examples` dev examples (representations.csv).
  c.representation_similarity = False
  c.similarity_examples = 256
  c.allow_mixed = False            # run on a workdir whose finished trials used another config
  # Independent workers on one workdir (README "Scaling out"): group j runs on worker j mod N
  # first; 0 = one worker, or the Slurm array's size (SLURM_ARRAY_TASK_COUNT) when it is one.
  c.num_workers = 0
  c.worker_index = -1              # -1 = SLURM_ARRAY_TASK_ID (- _MIN) or JOB_COMPLETION_INDEX
  c.lease_timeout = 600.0          # seconds without a heartbeat before another worker takes a group
  c.summarize_only = False         # rebuild summary, tables and figures from the records; train nothing
  return c


def lora_bitfit(c: ml_collections.ConfigDict) -> None:
  """LoRA and BitFit keys (select.py, freeze.py); the defaults and their sources: configs/select.py."""
  c.lora_rank = 8
  c.lora_alpha = 16.0               # scale alpha / rank
  c.lora_targets = ('query', 'value')  # any of query key value attention_output intermediate output
  c.lora_dropout = 0.0              # on the input of A
  c.lora_learning_rate = 4e-4
  c.bitfit_learning_rate = 1e-3


def demo(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Offline, minutes on a laptop CPU: the packaged MiniLM on the built-in sentiment set."""
  c.model = 'minilm-l6'
  c.task = 'sst2'
  c.data_dir = 'demo'
  c.max_seq_length = 64
  c.batch_size = 16
  c.learning_rate = 1e-4
  c.num_train_steps = 60
  c.seeds = (1, 2)
  c.train_sizes = (0,)
  c.log_every = 10
  return c


def apply_preset(c: ml_collections.ConfigDict, arg: str | None, presets: dict) -> None:
  """`--config=configs/x.py:demo` applies preset 'demo'; no preset leaves the paper's defaults."""
  name = (arg or '').strip()
  if not name:
    return
  if name not in presets:
    raise ValueError(f'Unknown preset {name!r} after the colon; this config has: '
                     f'{", ".join(sorted(presets))}.')
  presets[name](c)
