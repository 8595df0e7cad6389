"""What main.py runs: a training stage, an evaluation, or the demo's whole pipeline."""

import ml_collections

from glitr_jax import pipeline


def main(config: ml_collections.ConfigDict, workdir: str, mode: str) -> None:
  """Dispatches on `mode` ('train' | 'evaluate') and `config.stage`."""
  if config.stage == pipeline.PIPELINE:  # several stages in one workdir
    pipeline.run(config, workdir, mode)
    return
  if mode == 'evaluate':
    from glitr_jax.eval import run as eval_run  # noqa: PLC0415

    eval_run.evaluate(config, workdir)
    return
  if config.stage in ('teacher', 'student'):
    from glitr_jax.train import loop  # noqa: PLC0415

    loop.train_and_evaluate(config, workdir)
    return
  raise ValueError(f"stage={config.stage!r}: expected 'teacher', 'student' or 'pipeline'")
