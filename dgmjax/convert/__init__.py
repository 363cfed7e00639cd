"""Importers for the official PyTorch checkpoints (and the project's own baselines).

``dgmjax.convert.common`` reads a state_dict safely; one module per model maps its
official parameter names onto dgmjax variables (``glow``, ``lmconv``, ``nvae``).
"""
