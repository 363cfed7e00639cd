"""Training: optax optimisers, the jitted data-parallel step, the loop, orbax checkpoints.

Import submodules directly (``dgmjax.train.loop``); this package stays light.
"""
