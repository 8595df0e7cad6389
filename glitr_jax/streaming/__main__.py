"""`python -m glitr_jax.streaming`: see glitr_jax/streaming/cli.py."""

from absl import app

from glitr_jax.streaming import cli

if __name__ == '__main__':
  app.run(cli.main)
