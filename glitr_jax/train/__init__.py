"""Training: state and steps, checkpoints, initialisation, the loop."""
