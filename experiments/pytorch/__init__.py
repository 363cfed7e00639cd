"""experiments/pytorch."""
