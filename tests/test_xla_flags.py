"""Default XLA flags: added when absent, never overriding what the user put in XLA_FLAGS."""

from jaxtransfer.runtime import xla_flags


def test_defaults_are_added_to_empty_or_other_flags():
  env = {}
  assert xla_flags.set_defaults(env, set()) == '--xla_cpu_enable_fast_math=true'
  env = {'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
  assert xla_flags.set_defaults(env, set()).split() == [
      '--xla_force_host_platform_device_count=8', '--xla_cpu_enable_fast_math=true']


def test_the_users_setting_wins_and_nothing_is_added_twice():
  env = {'XLA_FLAGS': '--xla_cpu_enable_fast_math=false'}
  assert xla_flags.set_defaults(env, set()) == '--xla_cpu_enable_fast_math=false'
  env = {}
  xla_flags.set_defaults(env, set())
  assert xla_flags.set_defaults(env, set()) == '--xla_cpu_enable_fast_math=true'


def test_wide_vectors_only_on_avx512_cpus():
  env = {}
  assert xla_flags.set_defaults(env, {'avx2', 'avx512f'}).split() == [
      '--xla_cpu_enable_fast_math=true', '--xla_cpu_prefer_vector_width=512']
  env = {'XLA_FLAGS': '--xla_cpu_prefer_vector_width=256'}
  assert '=512' not in xla_flags.set_defaults(env, {'avx512f'})
