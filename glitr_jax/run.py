"""What main.py runs: a training stage, an evaluation, or the demo's whole pipeline."""

import ml_collections

from glitr_jax import pipeline
from glitr_jax.eval import run as eval_run
from glitr_jax.train import loop


def main(config: ml_collections.ConfigDict, workdir: str, mode: str) -> None:
  """Dispatches on `mode` ('train' | 'evaluate') and `config.stage`."""
  if config.stage == pipeline.PIPELINE:  # several stages in one workdir
    pipeline.run(config, workdir, mode)
  elif config.stage not in ('teacher', 'student'):
    raise ValueError(f"stage={config.stage!r}: expected 'teacher', 'student' or 'pipeline'")
  elif mode == 'evaluate':
    eval_run.evaluate(config, workdir)
  else:
    loop.train_and_evaluate(config, workdir)
