"""NVAE: cells, residual normals, the hierarchy, regularisers and the model.

``NVAEModel`` (``dgmjax.models.create("nvae", ...)``) lives in ``dgmjax.nvae.model``.
"""
