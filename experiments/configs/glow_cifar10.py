"""Glow on CIFAR-10 as in the paper (Kingma & Dhariwal 2018, table 2 and appendix).

    dgmjax train --config experiments/configs/glow_cifar10.py --workdir runs/glow_cifar10

L=3 levels, K=32 steps, width 512, affine coupling, invertible 1x1 convolutions,
learned top prior, openai/glow's network options (ActNorm inside the coupling network,
edge-bias padding, ActNorm log-scale factor 3); Adamax lr 1e-3 warmed up linearly over
10 epochs, batch 512 (8 GPUs x 64), beta2 and Polyak averaging 1 - 1/(steps per epoch)
= 1 - 1/98 (openai/glow ``optim.py``). Expected: 3.35 bits/dim (paper); not
reproduced here (the paper trained on 8 GPUs for days).

Also holds ``paper_glow``, the network and recipe every paper-size Glow config
(``glow_{mnist,celeba,imagenet32,imagenet64}.py``) builds on.
"""

from ml_collections.config_dict import placeholder

from dgmjax.train.config import base_config, finalize, split_variant


def paper_glow(dataset, variant, *, levels, steps, num_steps, batch_size, init_batch_size,
               b2, warmup_steps, smoke_batch, smoke_steps=1, coupling="affine"):
  """The paper's Glow on ``dataset``, not yet finalized: width 512, invertible 1x1
  convolutions, learned top prior and openai/glow's network options; Adamax lr 1e-3
  warmed up linearly over ``warmup_steps``, beta2 ``b2`` also the Polyak averaging decay
  (openai/glow sets both to 1 - 1/(steps per epoch)). ``variant="smoke"``: a width-16
  model with ``smoke_steps`` steps per level, 20 steps of batch ``smoke_batch``."""
  c = base_config("glow", dataset)
  # Each level's K steps are one stack run as a scan (compiles once, as fast as unrolled on
  # CPU, less memory: experiments/results/HISTORY.md); :unroll unrolls it.
  # --config.model.compute.remat=reversible: O(1)-memory gradient in depth
  # (dgmjax.flows.reversible); watch the rev_recon_err metric (trust the gradient while it
  # stays below ~1e-3).
  c.model.update(dict(levels=levels, steps=steps, width=512, coupling=coupling,
                      permutation="conv", learn_top=True, net_actnorm=True,
                      logscale_factor=3.0, edge_bias=True,
                      num_classes=placeholder(int)))  # --config.model.num_classes=N
  c.train.update(dict(num_steps=num_steps, batch_size=batch_size, eval_every=5000,
                      checkpoint_every=5000, log_every=100, init_batch_size=init_batch_size))
  c.optim.update(dict(name="adamax", lr=1e-3, b1=0.9, b2=b2, warmup_steps=warmup_steps,
                      ema_decay=b2))
  if variant == "smoke":
    c.model.update(dict(steps=smoke_steps, width=16))
    c.train.update(dict(num_steps=20, batch_size=smoke_batch, eval_every=10,
                        checkpoint_every=10, log_every=5, num_samples=smoke_batch,
                        init_batch_size=2 * smoke_batch, eval_batch_size=4 * smoke_batch))
    c.optim.update(dict(warmup_steps=5))
  return c


def get_config(variant=None):
  variant, shared = split_variant(variant, ("smoke",))
  # 50,000 images / 512 = 98 steps per epoch: 10 warm-up epochs, beta2 = 1 - 1/98.
  c = paper_glow("cifar10", variant, levels=3, steps=32, num_steps=300_000, batch_size=512,
                 init_batch_size=512, b2=0.9898, warmup_steps=977, smoke_batch=16)
  return finalize(c, shared)
