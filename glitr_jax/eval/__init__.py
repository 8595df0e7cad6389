"""Evaluation and analysis (paper section 5): online accuracy of the glimpse strategies, early
exit, sensing cost, pictures, reports, and comparisons of several runs.

  online      OnlineEvaluator: accuracy after every t, data parallel, each example counted once
  strategies  the glimpse strategies (learned, random, fixed, teacher)
  metrics     per-t correctness, early exit, location histograms, sensing cost
  pictures    plots, glimpse grids and GIFs
  report      report.json / report.md
  run         `main.py --mode=evaluate`: evaluate(config, workdir)
  compare     `python -m glitr_jax.eval.compare DIR1 DIR2 ...`
"""
