"""dgmjax.data: datasets by name as uint8 NHWC images, batching and pre-processing.

    from dgmjax import data
    ds = data.load("digits", "train")                 # ImageData: len, get, labels
    ds.num_bins, ds.image_shape                       # 17, (8, 8, 1)
    it = data.Batches(ds, batch_size=64, seed=0)      # infinite, deterministic, resumable
    x = next(it)["image"]                             # uint8 [64, 8, 8, 1]
    it.state() / it.restore(state)                    # the data position in checkpoints
    for batch, n_valid in data.eval_batches(test, 256):  # whole split, fixed shapes
      ...

Pre-processing: ``reduce_bits`` (num_bins = 2**n_bits), ``pad`` (28 -> 32),
``binarize`` (dynamic binarisation), and, re-exported from ``dgmjax.images``,
``dequantize`` (uniform dequantisation for flows) and ``to_centered`` ([-1, 1]).

Importing this package does not import tensorflow_datasets: tfds is loaded only when a
tfds dataset is requested.
"""

from __future__ import annotations

from dgmjax.data.batching import Batches, eval_batches
from dgmjax.data.datasets import ImageData, from_array, image_spec, load, names
from dgmjax.data.preprocess import binarize, pad, reduce_bits
from dgmjax.images import dequantize, to_centered

__all__ = [
    "Batches", "ImageData", "binarize", "dequantize", "eval_batches", "from_array", "image_spec",
    "load", "names", "pad", "reduce_bits", "to_centered",
]
