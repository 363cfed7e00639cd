"""Experiments: configs, the project's PyTorch baselines and the benchmark drivers.

Not part of the installed ``dgmjax`` package; importable from a checkout.
"""
