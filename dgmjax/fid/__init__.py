"""FID: the Fréchet Inception distance of a model's samples to a reference image set.

- ``inception``: the FID Inception network (pytorch-fid's ``InceptionV3``) in Flax, its
  input preparation (levels -> [0, 1], grey -> RGB, bilinear resize to 299, -> [-1, 1])
  and the pool3 features.
- ``frechet``: running feature statistics (mu, Sigma), the Fréchet distance, and
  pytorch-fid's ``.npz`` statistics format.

The weights come from pytorch-fid's weights file (``dgmjax.convert.inception``);
``dgmjax fid`` samples a workdir's model and prints its FID.
"""
