"""Importers for the official PyTorch checkpoints (and the project's own baselines).

``dgmjax.convert.common`` reads a state_dict safely; one module per model maps its
official parameter names onto dgmjax variables (``glow``, ``lmconv``, ``nvae``);
``official`` tells the formats apart and reads a whole file (``read_official_checkpoint``,
what ``dgmjax import`` calls).
"""
