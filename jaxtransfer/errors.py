"""Errors a user can fix: reported as one paragraph on stderr with exit code 2."""


class UserError(Exception):
  """Bad input (unknown task, bad index, missing data, ...): message names the value and the fix."""


def check_choices(key: str, value, allowed, *, many: bool = False) -> None:
  """Raises a UserError naming `--config.<key>` when `value` (a sequence if `many`) is not among
  `allowed`, or is empty where a sequence is expected."""
  values = list(value) if many else [value]
  bad = [v for v in values if v not in allowed]
  if bad or not values:
    shown = values if many else repr(value)
    raise UserError(f'{key}={shown}: {bad or "empty"} not allowed; choose among '
                    f'{", ".join(map(str, allowed))} (--config.{key}).')
