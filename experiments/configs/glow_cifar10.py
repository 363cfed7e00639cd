"""Glow on CIFAR-10 as in the paper (Kingma & Dhariwal 2018, table 2 and appendix).

    dgmjax train --config experiments/configs/glow_cifar10.py --workdir runs/glow_cifar10

L=3 levels, K=32 steps, width 512, affine coupling, invertible 1x1 convolutions,
learned top prior, openai/glow's network options (ActNorm inside the coupling network,
edge-bias padding, ActNorm log-scale factor 3); Adamax lr 1e-3 warmed up linearly over
10 epochs, batch 512 (8 GPUs x 64), beta2 and Polyak averaging 1 - 1/(steps per epoch)
= 1 - 1/98 (openai/glow ``optim.py``). Expected: 3.35 bits/dim (paper); not
reproduced here (the paper trained on 8 GPUs for days).
"""

from ml_collections.config_dict import placeholder

from dgmjax.train.config import base_config, finalize, split_variant


def get_config(variant=None):
  variant, shared = split_variant(variant, ("smoke",))
  c = base_config("glow", "cifar10")
  # Each level's K steps are one stack run as a scan (compiles once, as fast as unrolled on
  # CPU, less memory: experiments/results/HISTORY.md); :unroll unrolls it.
  # reversible=True: O(1)-memory gradient in depth (dgmjax.flows.reversible); watch the
  # rev_recon_err metric (trust the gradient while it stays below ~1e-3).
  c.model.update(dict(levels=3, steps=32, width=512, coupling="affine", permutation="conv",
                      learn_top=True, net_actnorm=True, logscale_factor=3.0, edge_bias=True,
                      reversible=False,
                      num_classes=placeholder(int)))  # --config.model.num_classes=N
  c.train.update(dict(num_steps=300_000, batch_size=512, eval_every=5000,
                      checkpoint_every=5000, log_every=100, init_batch_size=512))
  c.optim.update(dict(name="adamax", lr=1e-3, b1=0.9, b2=0.9898, warmup_steps=977,
                      ema_decay=0.9898))
  if variant == "smoke":
    c.model.update(dict(levels=3, steps=1, width=16))
    c.train.update(dict(num_steps=20, batch_size=16, eval_every=10, checkpoint_every=10,
                        log_every=5, num_samples=16, init_batch_size=32,
                        eval_batch_size=64))
    c.optim.update(dict(warmup_steps=5))
  return finalize(c, shared)
