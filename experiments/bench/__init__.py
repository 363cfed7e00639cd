"""experiments/bench."""
