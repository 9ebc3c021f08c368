"""Runs one jaxtransfer study; only flags live here (logic: jaxtransfer.train).

  python -m jaxtransfer.main --config=configs/reinit.py --workdir=results/reinit \
      [--config.<key>=<value> ...]

Exit codes: 0 success, 2 bad input (one paragraph on stderr, no traceback), 75 interrupted by
SIGINT (Ctrl-C) or SIGTERM after checkpointing (re-run the same command to resume), 130 aborted by
a second Ctrl-C, 1 anything else.
"""

import ast
import os
import re
import shlex
import sys
import textwrap

# Config files import their shared base as `from configs import base`: make the project root (the
# parent of configs/) importable whatever the working directory.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (os.getcwd(), _ROOT):
  if _p not in sys.path:
    sys.path.insert(0, _p)

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
import ml_collections  # noqa: E402
from ml_collections import config_flags  # noqa: E402
from ml_collections.config_flags import config_path  # noqa: E402

from jaxtransfer.errors import UserError  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file, e.g. configs/reinit.py or configs/reinit.py:demo.',
    lock_config=True)
flags.DEFINE_string('workdir', None,
                    'Output directory (resumable). Default: results/<experiment>-<task>-<model>-<date>.')


EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: nothing is wrong, run it again


def _resume_command(workdir: str | None) -> str:
  """The command line to run again; the workdir made explicit (its default holds today's date)."""
  args = sys.argv[1:]
  if FLAGS.workdir is None and workdir:
    args = args + [f'--workdir={workdir}']
  return 'python -m jaxtransfer.main ' + shlex.join(args)


def _bad_input(message: str) -> None:
  sys.stderr.write(textwrap.fill(' '.join(message.split()), width=100) + '\n')
  sys.exit(2)


USAGE = ('Usage: python -m jaxtransfer.main --config=configs/<experiment>.py[:demo] --workdir=DIR '
         '[--config.<key>=<value> ...].')


def _config_arg(argv) -> str:
  """The --config value as given (file[:preset]), for messages."""
  for i, a in enumerate(argv):
    if a.startswith('--config='):
      return a.split('=', 1)[1]
    if a == '--config' and i + 1 < len(argv):
      return argv[i + 1]
  return ''


def _bad_config_file(argv, e: BaseException) -> None:
  """A config file that cannot be read or run: one paragraph naming it and the reason."""
  path = _config_arg(argv).split(':', 1)[0]
  reason = str(e).strip().splitlines()[-1] if str(e).strip() else ''
  errno = re.search(r'\[Errno \d+\][^\n]*', str(e))
  if isinstance(e, OSError) and errno:  # missing, a directory, unreadable
    reason = errno[0]
  if isinstance(e, SyntaxError):
    reason = f'line {e.lineno}: {e.msg}'
  _bad_input(f'Could not load the config file {path!r} ({type(e).__name__}: {reason}). Give an '
             'existing config file with a get_config() function, e.g. '
             f'--config=configs/finetune.py:demo (all of them: configs/*.py). {USAGE}')


def _split_strings(value: str):
  """'a,b', '(a,b)', '(a,)' as a tuple of strings; None where ml_collections already reads the
  value as meant (a Python literal, or one bare word: a 1-tuple)."""
  try:
    ast.literal_eval(value)
    return None  # "('a','b')", '1,2', '()', "'a,b'": as ml_collections reads them
  except (SyntaxError, ValueError):
    pass
  text = value.strip()
  bracketed = text[:1] + text[-1:] in ('()', '[]')
  if bracketed:
    text = text[1:-1]
  elif ',' not in text:
    return None
  items = [t.strip() for t in text.split(',')]
  if len(items) > 1 and not items[-1]:  # a trailing comma: '(a,)'
    items.pop()
  if not all(items):
    return None  # 'a,,b': left to ml_collections (and its error)
  return tuple(map(_unquote, items))


def _unquote(item: str) -> str:
  try:
    value = ast.literal_eval(item)  # "'a'" -> 'a'
  except (SyntaxError, ValueError):
    return item
  return value if isinstance(value, str) else item


def string_tuple_overrides(argv) -> list:
  """argv with each --config.<key> override of a key whose default is a tuple of strings written
  as a tuple literal, so that --config.method=adapter,lora (or '(adapter,lora)', '(adapter,)')
  means ('adapter', 'lora'): ml_collections' TupleParser runs ast.literal_eval on the value, which
  reads 1,2,3 as (1, 2, 3) but keeps adapter,lora as the single string 'adapter,lora'. Other keys
  and values that are already Python literals are left as they are."""
  override = re.compile(r'(-{1,2}config\.([\w.]+))(=(.*))?\Z', re.S)
  config = None
  out = list(argv)
  for i, arg in enumerate(out):
    m = override.match(arg)
    if not m or (m[3] is None and i + 1 >= len(out)):
      continue
    if config is None:
      try:  # as config_flags loads it; a file that fails is reported by absl's own parse
        config = FLAGS['config'].parser.parse(_config_arg(argv))
        if not isinstance(config, ml_collections.ConfigDict):
          return out
      except Exception:  # pylint: disable=broad-except
        return out
    try:
      default = config_path.get_value(m[2], config)
    except Exception:  # pylint: disable=broad-except  (an unknown key: absl reports it)
      continue
    if not (isinstance(default, (tuple, list)) and default
            and all(isinstance(x, str) for x in default)):
      continue
    j, value = (i, m[4]) if m[3] is not None else (i + 1, out[i + 1])
    items = _split_strings(value)
    if items is not None:
      out[j] = f'{m[1]}={items!r}' if j == i else repr(items)
  return out


def _parse_flags(argv):
  """absl's parser, but a bad flag, preset, config file or key is exit 2 with one clear paragraph."""
  try:
    return FLAGS(string_tuple_overrides(argv))
  except OSError as e:  # an override applied to a config file that failed to load
    _bad_config_file(argv, e)
  except flags.Error as e:
    msg = str(e)
    if 'Traceback' in msg:  # an error raised inside the config file: keep its last line only
      msg = msg.strip().splitlines()[-1]
      msg = msg.split('Error: ', 1)[-1]
    _bad_input(f'Bad command line: {msg} {USAGE}')
  except (AttributeError, KeyError) as e:
    if "no attribute 'get_config'" in str(e):
      _bad_config_file(argv, e)
    # A --config.<key> override naming a key the (locked) config does not have.
    text = str(e).replace('\\', '')
    guess = re.search(r'Did you mean "([^"]+)" instead of "([^"]+)"', text)
    hint = (f"'{guess[2]}' (did you mean '{guess[1]}'?)" if guess
            else text.strip('\'"').splitlines()[0])
    _bad_input(f'Unknown config key in a --config.<key>=<value> override: {hint}. Every key must '
               f'exist in the config file (shared keys: configs/base.py). {USAGE}')
  except Exception as e:  # pylint: disable=broad-except
    # Raised while running the config file itself (SyntaxError, NameError, ImportError, ...).
    _bad_config_file(argv, e)


class _QuietLibraries:
  """Drops the INFO chatter of orbax and JAX's backend probing; keeps their warnings."""
  NOISY = ('/orbax/', 'xla_bridge.py', '/jax/_src/distributed.py')

  def filter(self, record) -> bool:
    return record.levelno > 20 or not any(n in record.pathname for n in self.NOISY)


def main(argv):
  logging.get_absl_handler().addFilter(_QuietLibraries())
  if len(argv) > 1:
    _bad_input(f'Unexpected arguments {argv[1:]}: pass options as --config.<key>=<value>.')
  if FLAGS.config is None:
    _bad_input('Missing --config: pass an experiment config, e.g. --config=configs/finetune.py:demo.')
  config = FLAGS.config
  if not isinstance(config, ml_collections.ConfigDict):
    try:
      getattr(config, 'experiment', None)  # ml_collections defers a failed load to this access
    except OSError as e:
      _bad_config_file(sys.argv, e)
    _bad_input(f'The config file {_config_arg(sys.argv)!r} returned {type(config).__name__}, not '
               'an ml_collections.ConfigDict: its get_config() must return one, e.g. built on '
               'configs/base.py (`c = base.get_config()`).')
  from jaxtransfer.runtime import host_memory
  from jaxtransfer.runtime import xla_flags
  xla_flags.set_defaults()  # before the first device is created
  host_memory.keep_freed_memory()  # before JAX starts its threads
  from jaxtransfer import train  # heavy imports after flag parsing, so --help is fast
  from jaxtransfer.engine.trials import Preempted
  try:
    train.train_and_evaluate(config, FLAGS.workdir)
  except UserError as e:
    logging.flush()
    _bad_input(str(e))
  except Preempted as e:
    logging.flush()
    sys.stderr.write(f'Interrupted. {e} To resume, run the same command: '
                     f'{_resume_command(e.workdir)}\n')
    sys.exit(EXIT_INTERRUPTED)
  except KeyboardInterrupt:
    logging.flush()
    sys.stderr.write('Aborted by a second Ctrl-C. Finished trials are in trials.jsonl; the group in '
                     'flight resumes from its last periodic checkpoint, if it had one.\n')
    sys.stderr.flush()
    # At once: a normal interpreter exit would tear down XLA while its threads still compute.
    os._exit(130)


def run():
  app.run(main, flags_parser=_parse_flags)


if __name__ == '__main__':
  run()
