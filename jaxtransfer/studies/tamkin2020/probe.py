"""Linear probes on the frozen model after its first k blocks (Tamkin et al.), every k at once.

The frozen model's features are computed once, in eval mode: for each example and each k = 0..L
the [CLS] vector of hidden state k (or the mean over real tokens), through the frozen pretrained
pooler when the model has one, as the authors' probes read it. The engine then trains every
(k, seed) probe of a training size in one vmapped group over those features: the train/dev
"data" are {'features': (N, L+1, H), 'labels': (N,)} and a trial's `arrays['layer']` picks k.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxtransfer.engine import batching
from jaxtransfer.models import config as model_config
from jaxtransfer.engine import trials as trials_lib
from jaxtransfer.core import program as program_lib
from jaxtransfer.studies.tamkin2020 import analysis as tamkin
from jaxtransfer.engine.trials import Trial
from jaxtransfer.errors import UserError, check_choices
from jaxtransfer.studies import base
from jaxtransfer.studies.tamkin2020 import mdl
from jaxtransfer.studies.tamkin2020 import reinit
from jaxtransfer.models import bert

MIX = tamkin.MIX  # the setting `k` of the scalar-mix probe


@dataclasses.dataclass(frozen=True)
class ProbeProgram:
  """dropout -> linear over the precomputed feature vector of layer `arrays['layer']`, or with
  `mix_layers` = L+1 over Tenney et al.'s scalar mix of all of them, gamma x sum_j softmax(w)_j h_j
  (w starts at 0, an even mix, and gamma at 1)."""
  hidden: int
  num_labels: int
  dropout: float = 0.1
  init_std: float = 0.02
  mix_layers: int = 0

  shares_frozen = True
  supports_packing = False  # its batches are feature vectors (or, with dropout, whole rows)

  @property
  def is_regression(self) -> bool:
    return self.num_labels == 1

  @property
  def hidden_size(self) -> int:
    return self.hidden

  @staticmethod
  def decays(path: tuple[str, ...]) -> bool:
    # HF's no-decay rule, as Program.decays; the mix's weights are a distribution, not weights.
    return path[0] != 'mix' and path[-1] not in ('bias', 'scale')

  def loss(self, train, frozen, batch, weights, arrays, rng):
    out = self.apply(train, frozen, batch, arrays, deterministic=False, rng=rng)
    return program_lib.weighted_loss(out, batch['labels'], weights, self.is_regression)

  def activation_bytes(self, batch_size: int, seq_len: int) -> int:
    del batch_size, seq_len
    return 0  # a linear layer over one precomputed vector per example

  def describe(self) -> str:
    return program_lib.describe_fields(self)

  def _head(self):
    return program_lib.LinearHead(self.num_labels, self.dropout, self.init_std)

  def defaults(self):
    return {'layer': np.int32(0)}

  def init(self, pretrained, arrays, rng):
    del pretrained, arrays
    train = {'head': self._head().init(rng, jnp.zeros((1, self.hidden)))['params']}
    if self.mix_layers:
      train['mix'] = {'weights': jnp.zeros(self.mix_layers, jnp.float32),
                      'gamma': jnp.ones((), jnp.float32)}
    return train, {}

  def lr_multipliers(self, train, arrays):
    del arrays
    return jax.tree.map(lambda _: jnp.ones((), jnp.float32), train)

  def apply(self, train, frozen, batch, arrays, *, deterministic=True, rng=None):
    del frozen
    if self.mix_layers:
      mix = train['mix']
      x = mix['gamma'] * jnp.einsum('j,bjh->bh', jax.nn.softmax(mix['weights']),
                                    batch['features'])
    else:
      x = jnp.take(batch['features'], arrays['layer'], axis=1)
    rngs = None if deterministic else {'dropout': rng}
    return self._head().apply({'params': train['head']}, x, deterministic, rngs=rngs)

  def report(self, train, frozen, arrays):
    """A scalar mix's learned weights over the layers (`mix_weights/<j>`, summing to 1)."""
    del frozen, arrays
    if not self.mix_layers:
      return {}
    weights = jax.nn.softmax(train['mix']['weights'])
    return {**{f'mix_weights/{j}': weights[j] for j in range(self.mix_layers)},
            'mix_gamma': train['mix']['gamma']}

  def export_params(self, *args):
    raise UserError('A probe has no encoder of its own to export: set --config.export_model=False.')


def layer_vectors(c, params, pooler, ids, mask, types, *, pooling: str, deterministic=True,
                  rng=None) -> jax.Array:
  """(B, L+1, H): per hidden state the [CLS] vector or the mean over real tokens, through the
  frozen pooler when given (dropout in the encoder when not `deterministic`)."""
  hs = bert.hidden_states(c, params, ids, mask, types, deterministic=deterministic, rng=rng)
  if pooling == 'mean':
    m = mask[None, :, :, None].astype(hs.dtype)
    v = (hs * m).sum(2) / jnp.maximum(m.sum(2), 1)
  else:
    v = hs[:, :, 0]
  if pooler is not None:
    flat = v.reshape(-1, 1, c.hidden_size)
    v = bert.pool(c, pooler, flat).reshape(v.shape)
  return jnp.swapaxes(v, 0, 1)


@dataclasses.dataclass(frozen=True)
class DropoutProbeProgram(ProbeProgram):
  """The probe as the authors' code trains it (`probe_dropout=True`): the frozen encoder runs on
  the tokens at every step in train mode, so its dropout is on under the probe; evaluation reads
  it in eval mode. Costs a forward pass of the encoder per step instead of precomputed features."""
  encoder: model_config.EncoderConfig | None = None
  pooling: str = 'cls'
  use_pooler: bool = True

  def activation_bytes(self, batch_size: int, seq_len: int) -> int:
    # The frozen encoder's forward pass, whose activations are not kept for a backward pass but
    # were counted so before: keep the estimate as it was.
    return program_lib.block_activation_bytes(self.encoder, batch_size, seq_len)

  def init(self, pretrained, arrays, rng):
    frozen = {k: pretrained[k] for k in ('embeddings', 'blocks', 'pooler') if k in pretrained}
    if not self.use_pooler:
      frozen.pop('pooler', None)
    return super().init(pretrained, arrays, rng)[0], frozen

  def apply(self, train, frozen, batch, arrays, *, deterministic=True, rng=None):
    v = layer_vectors(self.encoder, frozen, frozen.get('pooler'), batch['input_ids'],
                      batch['attention_mask'], batch.get('token_type_ids'), pooling=self.pooling,
                      deterministic=deterministic,
                      rng=None if deterministic else jax.random.fold_in(rng, 1))
    features = {'features': jax.lax.stop_gradient(v)}
    return super().apply(train, frozen, features, arrays, deterministic=deterministic, rng=rng)


def frozen_features(pre, data: dict[str, np.ndarray], rows, *, pooling: str = 'cls',
                    use_pooler: bool = True, batch_size: int = 256) -> np.ndarray:
  """(N, L+1, H) float32 features of the frozen model (rows not in `rows` stay zero).

  Rows are sorted by length and each batch is cut to its longest example (rounded up to 16), so
  short sentences cost little and only a handful of shapes compile.
  """
  c, params = pre.config, pre.params
  n = data['input_ids'].shape[0]
  out = np.zeros((n, c.num_layers + 1, c.hidden_size), np.float32)
  rows = np.asarray(rows, np.int64)
  if not len(rows):
    return out
  pooler = params.get('pooler') if use_pooler else None

  @jax.jit
  def features(params, ids, mask, types):
    return layer_vectors(c, params, pooler, ids, mask, types, pooling=pooling)

  for idx, width in batching.by_length(data['attention_mask'], batch_size, rows):
    pad = np.concatenate([idx, np.repeat(idx[:1], batch_size - len(idx))])  # one batch shape
    cut = {k: data[k][pad, :width] for k in ('input_ids', 'attention_mask', 'token_type_ids')}
    feats = np.asarray(features(params, *(cut[k] for k in ('input_ids', 'attention_mask',
                                                             'token_type_ids'))))
    out[idx] = feats[:len(idx)]
  return out


class Probe(base.Experiment):
  """One linear probe per (k, seed, train size), all k of a size trained in one group."""
  name = 'probe'
  trains_heads_on_frozen_blocks = True
  fine_tunes = False
  sweep_keys = ('ks', 'pooling', 'probe_pooler', 'small_size_seeds')

  def validate(self, ctx):
    L = ctx.pretrained.num_layers
    reinit.expand(ctx.config.ks, 'ks', 0, L, L)
    if ctx.config.feature_batch_size <= 0:
      raise UserError(f'feature_batch_size={ctx.config.feature_batch_size} must be positive.')
    base.require_classification(ctx.task, 'probing')
    if ctx.config.export_model:
      raise UserError('A probe has no encoder of its own to export: set --config.export_model=False.')
    check_choices('probe_metric', ctx.config.get('probe_metric', 'accuracy'), ('accuracy', 'mdl'))
    if self.mdl(ctx) and ctx.config.get('probe_dropout', False):
      raise UserError('probe_metric=mdl codes the training labels with probes on precomputed '
                      'features; it does not run with probe_dropout=True. Drop one of them.')

  @staticmethod
  def mdl(ctx) -> bool:
    return ctx.config.get('probe_metric', 'accuracy') == 'mdl'

  def program(self, ctx, mix: bool = False) -> ProbeProgram:
    """The probe of one layer, or (`mix`) of the scalar mix of all L+1."""
    c = ctx.pretrained.config
    args = (c.hidden_size, ctx.task.num_labels, c.hidden_dropout, c.initializer_range,
            c.num_layers + 1 if mix else 0)
    if ctx.config.get('probe_dropout', False):
      return DropoutProbeProgram(*args, encoder=c, pooling=ctx.config.pooling,
                                 use_pooler=self.use_pooler(ctx))
    return ProbeProgram(*args)

  def use_pooler(self, ctx) -> bool:
    return bool(ctx.config.probe_pooler and ctx.pretrained.config.has_pooler)

  def trials(self, ctx):
    L = ctx.pretrained.num_layers
    program = self.program(ctx)
    # What the probe reads is part of the setting, so probes of different kinds plot apart.
    read = {'pooling': ctx.config.pooling, 'pooler': self.use_pooler(ctx)}
    ks = reinit.expand(ctx.config.ks, 'ks', 0, L, L)
    out = [Trial(seed, int(size), {'k': k, **read}, program, arrays={'layer': np.int32(k)})
           for size in ctx.config.train_sizes for k in ks
           for seed in reinit.seeds_for(ctx.config, int(size))]
    if ctx.config.get('scalar_mix', False):
      mix = self.program(ctx, mix=True)
      out += [Trial(seed, int(size), {'k': MIX, **read}, mix) for size in ctx.config.train_sizes
              for seed in reinit.seeds_for(ctx.config, int(size))]
    if self.mdl(ctx):
      out += self.portion_trials(ctx, [t for t in out if t.setting['k'] != MIX])
    reinit.log_trial_count(self.name, ctx.config, len(ks), len(out))
    return out

  def portion_trials(self, ctx, trials) -> list[Trial]:
    """probe_metric=mdl: per layer probe, one more per portion but the last (mdl.PORTIONS), on the
    first n_t examples of its seed's draw; `train_size` is n_t, the setting says which portion of
    which N it is."""
    n_total = len(ctx.data.train)
    out = []
    for t in trials:
      n = t.train_size if 0 < t.train_size < n_total else n_total
      for portion, size in zip(mdl.PORTIONS[:-1], mdl.sizes(n)):
        setting = {**t.setting, mdl.PORTION_KEY: portion, mdl.OF_KEY: n}
        out.append(Trial(t.seed, size, setting, t.program, arrays=dict(t.arrays)))
    return out

  def execute(self, ctx, engine, trials):
    """probe_metric=mdl: the portion probes first (one group when the step count is fixed), then
    the others, whose records carry the code length their portions add up to."""
    if not self.mdl(ctx):
      return engine.run(trials)
    portions = [t for t in trials if mdl.PORTION_KEY in t.setting]
    records = engine.run(portions)
    ctx.prepared['codelengths'] = mdl.codelengths(records, ctx.task.num_labels)
    return records + engine.run([t for t in trials if mdl.PORTION_KEY not in t.setting])

  def uses_params(self, ctx, program):
    return self.mdl(ctx) or super().uses_params(ctx, program)

  def trial_metrics(self, ctx, trial, params):
    """probe_metric=mdl: a portion probe's cost of the next block (`portion_bits`); a layer
    probe's `codelength_bits` and `compression`, from its portions."""
    s = trial.setting
    if not self.mdl(ctx) or s['k'] == MIX:
      return {}
    n_total = len(ctx.data.train)
    if mdl.PORTION_KEY in s:
      rows = mdl.block_rows(trial.seed, n_total, s[mdl.OF_KEY], s[mdl.PORTION_KEY])
      train = ctx.prepared['train']
      return {mdl.BITS: mdl.block_bits(trial.program, params, train['features'][rows],
                                       train['labels'][rows])}
    n = trial.train_size if 0 < trial.train_size < n_total else n_total
    return dict(ctx.prepared['codelengths'].get(mdl.layer_key(n, s, trial.seed), {}))

  def run_spec(self, ctx, trials):
    spec = super().run_spec(ctx, trials)
    if ctx.config.get('probe_dropout', False):
      return spec  # each probe runs the encoder: the engine's grouping for encoders
    # All probes of a size in one group: they are tiny, the engine's memory guess is for encoders.
    return dataclasses.replace(spec, trials_per_program=spec.trials_per_program or len(trials))

  def engine_inputs(self, ctx, trials):
    """The frozen model's features instead of token ids: {'features': (N, L+1, H), 'labels'}
    (with probe_dropout, the tokens and the pretrained params: features are made every step)."""
    if ctx.config.get('probe_dropout', False):
      return super().engine_inputs(ctx, trials)
    return {}, ctx.prepared['train'], ctx.prepared['dev']

  def prepare(self, ctx, trials):
    """The frozen features of the training examples some trial trains on and of the dev sets
    (made once, before training; the MDL code lengths read them too)."""
    c = ctx.config
    if c.get('probe_dropout', False):
      return {}
    train = ctx.data.train.as_dict()
    n = len(train['labels'])
    # Only the examples some trial trains on: each seed's subset (the engine's own draw).
    rows = np.unique(np.concatenate([trials_lib.trial_subset(t.seed, n, t.train_size)
                                     for t in trials]))
    if c.probe_pooler and not self.use_pooler(ctx):
      logging.warning('%s has no pooler: the probes read the %s vector itself.', c.model,
                      c.pooling)
    kw = dict(pooling=c.pooling, use_pooler=self.use_pooler(ctx), batch_size=c.feature_batch_size)
    logging.info('Computing frozen features of %d training and %d dev examples.', len(rows),
                 sum(len(d) for d in ctx.data.dev.values()))
    feats = lambda d, r: {'features': frozen_features(ctx.pretrained, d, r, **kw),
                          'labels': d['labels']}
    dev = {k: feats(v.as_dict(), np.arange(len(v))) for k, v in ctx.data.dev.items()}
    return {'train': feats(train, rows), 'dev': dev}

  def finalize(self, ctx, records):
    tamkin.plot_probe(ctx.workdir, records, ctx.task.primary_metric, info=ctx.info)
    mdl.write(ctx.workdir, records, ctx.task.num_labels, ctx.info)


