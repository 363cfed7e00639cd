"""LMConv on dynamically binarised MNIST (28x28), as the paper and ajayjain/lmconv.

    dgmjax train --config experiments/configs/lmconv_binarized_mnist.py \\
        --workdir runs/lmconv_binarized_mnist

The official run (README: ``main.py -d mnist -b 32 --ours -k 3 --normalization pono
--order s_curve --randomize_order -dp 0 --binarize``): F=160, R=5, PONO, no dropout, the
official 2-way softmax head, the 8 s-curve variants (one per batch in training, their
ensemble at test), Adam lr 2e-4 decayed by 0.999995 per step, batch 32, 160 epochs.
Expected: 77.56 nats (paper, 8 s-curve orders); not reproduced here (CPU only).
Binarisation is resampled every batch (``data.binarize``), as the official code does.
Builds on ``paper_lmconv`` of experiments/configs/lmconv_cifar10.py.
"""

import os
import runpy

from dgmjax.train.config import finalize, split_variant

paper_lmconv = runpy.run_path(os.path.join(os.path.dirname(__file__),
                                           "lmconv_cifar10.py"))["paper_lmconv"]


def get_config(variant=None):
  variant, shared = split_variant(variant, ("smoke",))
  c = paper_lmconv("mnist", head="auto")   # 1 channel, 2 levels: the 2-way softmax head
  c.data.update(dict(binarize=True))
  c.train.update(dict(num_steps=300_000, eval_every=10_000, eval_batch_size=64,
                      num_samples=16))
  if variant == "smoke":
    c.model.update(dict(filters=8, resnets=1, orders=("s_curve", "s_curve:1")))
    c.train.update(dict(num_steps=20, batch_size=8, eval_every=10, checkpoint_every=10,
                        log_every=5, num_samples=2, eval_batch_size=32))
  return finalize(c, shared)
