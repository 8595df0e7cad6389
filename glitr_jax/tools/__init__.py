"""Command-line tools run as `python -m glitr_jax.tools.<name>` (each documents its command)."""
