"""What importing the package costs and changes, checked in fresh interpreters."""

import subprocess
import sys
import textwrap


def _run_fresh(code: str) -> subprocess.CompletedProcess:
  """Runs `code` in a new interpreter (this one has long since imported matplotlib)."""
  return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True,
                        text=True, timeout=600)


# ----------------------------------------------------------------------------- matplotlib

_IMPORT_EVERY_STUDY_AND_REPORT_MODULE = '''
import importlib, pkgutil, sys
import jaxtransfer.main, jaxtransfer.train, jaxtransfer.studies, jaxtransfer.report
imported = []
for pkg in (jaxtransfer.studies, jaxtransfer.report):
  for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):
    importlib.import_module(m.name)
    imported.append(m.name)
'''


def test_matplotlib_importing_the_studies_and_report_does_not_import_matplotlib():
  """A notebook importing any study keeps its own backend, and the command line pays for
  matplotlib only when it draws."""
  proc = _run_fresh(_IMPORT_EVERY_STUDY_AND_REPORT_MODULE + '''
assert 'jaxtransfer.report.plots' in imported and len(imported) > 10, imported
found = sorted(m for m in sys.modules if m == 'matplotlib' or m.startswith('matplotlib.'))
assert not found, found
print('ok')
''')
  assert proc.returncode == 0 and proc.stdout.strip().endswith('ok'), proc.stdout + proc.stderr


def test_matplotlib_drawing_a_figure_never_selects_a_pyplot_backend():
  """Figures are bare matplotlib.figure.Figure objects saved through their Agg canvas: drawing
  one neither imports pyplot nor calls matplotlib.use."""
  proc = _run_fresh(_IMPORT_EVERY_STUDY_AND_REPORT_MODULE + '''
import os, tempfile
import matplotlib
backend = matplotlib.rcParams._get_backend_or_none()  # as left by the environment
from jaxtransfer.report import finetune
records = [{'trial_id': str(s), 'task': 'sst2', 'model': 'minilm-l6', 'seed': s, 'train_size': 0,
            'setting': {}, 'status': 'ok', 'metrics': {'accuracy': v}, 'train_loss': 0.5}
           for s, v in ((1, 0.8), (2, 0.6))]
with tempfile.TemporaryDirectory() as workdir:
  path = finetune.plot_trials(workdir, records, 'accuracy')
  assert path and os.path.getsize(path) > 0, path
assert 'matplotlib' in sys.modules
assert 'matplotlib.pyplot' not in sys.modules
assert matplotlib.rcParams._get_backend_or_none() == backend
print('ok')
''')
  assert proc.returncode == 0 and proc.stdout.strip().endswith('ok'), proc.stdout + proc.stderr


# ----------------------------------------------------------------------------- a run's start


def test_what_a_run_does_before_its_figures_imports_no_heavy_library():
  """The CLI's work up to the figures (the package, the MiniLM tokenizer, TensorBoard event files,
  t intervals) imports neither torch, transformers, matplotlib nor scipy.stats (~3 s together);
  tensorboardX stays importable as a whole afterwards."""
  proc = _run_fresh('''
import sys, tempfile, types
import jaxtransfer.main, jaxtransfer.train
from jaxtransfer.engine import tensorboard
from jaxtransfer.models import pretrained
from jaxtransfer.report import stats
pretrained.load_tokenizer(pretrained.resolve('minilm-l6'))
trial = types.SimpleNamespace(setting={'k': 1}, train_size=10, seed=1)
with tempfile.TemporaryDirectory() as root:
  w = tensorboard.TrialWriters(root, [trial])
  w.scalars(0, {'train/loss': 0.5}, 1)
  w.close([{'accuracy': 0.5}], 2)
assert abs(stats.t_ci([0.7, 0.75, 0.8])[3] - 0.8742) < 1e-3
heavy = ('torch', 'transformers', 'matplotlib', 'scipy.stats')
found = [m for m in heavy if m in sys.modules]
assert not found, found
import tensorboardX
assert tensorboardX.SummaryWriter and 'tensorboardX.event_file_writer' in sys.modules
print('ok')
''')
  assert proc.returncode == 0 and proc.stdout.strip().endswith('ok'), proc.stdout + proc.stderr
