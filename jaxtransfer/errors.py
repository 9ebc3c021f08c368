"""Errors a user can fix: reported as one paragraph on stderr with exit code 2."""


class UserError(Exception):
  """Bad input (unknown task, bad index, missing data, ...): message names the value and the fix."""
