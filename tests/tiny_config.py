"""main.py config for subprocess tests: `--config=tests/tiny_config.py:teacher` (or :student)."""

from tiny import tiny_train_config


def get_config(arg=None):
  return tiny_train_config(arg or 'teacher')
