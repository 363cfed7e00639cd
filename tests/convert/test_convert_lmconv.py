"""The PyTorch LMConv baseline (official layout) and its import into dgmjax.

PyTorch side: state_dict keys/shapes equal the official ones recorded in
tests/testdata/state_dicts; the locally masked conv equals ``F.conv2d`` under an
all-ones mask and its hand-written backward equals autograd's; the masks follow the
order; the likelihood sums to one over tiny image spaces and is autoregressive in the order.
Import: the same weights, input and order give the same per-pixel and total
log-likelihood in dgmjax (1e-4 relative) for the binarised, RGB and greyscale heads (with
nr_resnet=2 too: the per-resnet arrays stacked [num, ...], slice j = ``u_stream.j``);
missing, unexpected and mis-shaped keys are ValueErrors naming the key; .pt files load
through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import itertools
import json
import os

import numpy as np
import pytest
import jax
import jax.numpy as jnp
import torch
import torch.nn.functional as F

import dgmjax
from dgmjax.convert.lmconv import load_lmconv
from experiments.pytorch import lmconv as tl

REF_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "testdata",
                       "state_dicts")

# (reference file, constructor kwargs) as in tests/testdata/state_dicts/README.md
REFERENCE_CONFIGS = {
    "lmconv_mnist_tiny": dict(nr_resnet=1, nr_filters=16, input_channels=1, binarize=True,
                              num_bins=2),
    "lmconv_cifar_tiny": dict(nr_resnet=1, nr_filters=16, input_channels=3),
    "lmconv_mnist_faithful": dict(nr_resnet=5, nr_filters=160, input_channels=1, binarize=True,
                                  num_bins=2),
    "lmconv_cifar_faithful": dict(nr_resnet=5, nr_filters=160, input_channels=3),
}


def _reference(name):
  path = os.path.join(REF_DIR, f"{name}.state_dict.json")
  with open(path) as f:
    return json.load(f)


# ---------------------------------------------------------------------------
# PyTorch baseline
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(REFERENCE_CONFIGS))
def test_state_dict_layout_matches_official(name):
  # The faithful (46M-parameter) sizes are built on the meta device: shapes, no memory.
  with torch.device("meta"):
    model = tl.OurPixelCNN(**REFERENCE_CONFIGS[name])
  mine = tl.official_state_dict_shapes(model)
  ref = _reference(name)
  assert list(mine) == list(ref)          # same keys, same order
  assert mine == ref                      # same shapes


@pytest.mark.parametrize("dilation", [1, 2])
def test_masked_conv_with_all_ones_mask_is_conv2d(dilation):
  g = torch.Generator().manual_seed(0)
  x = torch.randn(2, 3, 6, 7, generator=g)
  w = torch.randn(4, 3, 3, 3, generator=g)
  b = torch.randn(4, generator=g)
  mask = torch.ones(9, 6 * 7)
  got = tl.locally_masked_conv2d(x, mask, w, b, dilation=dilation)
  want = F.conv2d(x, w, b, padding=dilation, dilation=dilation)
  torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _masked_conv_autograd(x, mask, w, b, mw, dilation):
  """The same layer written with autograd-differentiated torch ops only."""
  cols = F.unfold(x, 3, dilation=dilation, padding=dilation)  # [B, Cin*9, L]
  bsz, cin = x.shape[:2]
  cols = (cols.view(bsz, cin, 9, -1) * mask.view(-1, 1, 9, mask.shape[-1])).view(bsz, cin * 9, -1)
  out = w.view(w.shape[0], -1) @ cols + b.view(1, -1, 1) + mw.view(w.shape[0], 9) @ mask
  return out.view(bsz, w.shape[0], *x.shape[2:])


@pytest.mark.parametrize("per_example_mask", [False, True])
def test_masked_conv_backward_matches_autograd(per_example_mask):
  g = torch.Generator().manual_seed(1)
  h, w_ = 5, 4
  x = torch.randn(2, 3, h, w_, generator=g, dtype=torch.float64, requires_grad=True)
  w = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
  b = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
  mw = torch.randn(4, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
  orders = [tl.s_curve_order(h, w_), np.random.default_rng(0).permutation(h * w_)]
  masks = [tl.get_masks(o, h, w_, 3, 2)[2] for o in orders]
  mask = (torch.stack(masks) if per_example_mask else masks[0]).double()
  got = tl.locally_masked_conv2d(x, mask, w, b, mw, dilation=2)
  want = _masked_conv_autograd(x, mask if mask.dim() == 3 else mask[None], w, b, mw, 2)
  torch.testing.assert_close(got, want)
  cot = torch.randn(got.shape, generator=g, dtype=torch.float64)
  grads = torch.autograd.grad((got * cot).sum(), (x, w, b, mw))
  want_grads = torch.autograd.grad((want * cot).sum(), (x, w, b, mw))
  for a, e in zip(grads, want_grads):
    torch.testing.assert_close(a, e)


def test_kernel_masks_follow_the_order():
  h, w = 5, 6
  order = np.random.default_rng(3).permutation(h * w)
  rank = np.empty(h * w, int)
  rank[order] = np.arange(h * w)
  for dilation, mask_type in [(1, "A"), (1, "B"), (2, "B")]:
    m = tl.kernel_masks(order, h, w, 3, dilation, mask_type)
    for p in range(h * w):
      r, c = divmod(p, w)
      for i, j in itertools.product(range(3), range(3)):
        qr, qc = r + (i - 1) * dilation, c + (j - 1) * dilation
        if (i, j) == (1, 1):
          want = mask_type == "B"
        else:
          want = 0 <= qr < h and 0 <= qc < w and rank[qr * w + qc] < rank[p]
        assert m[p, i, j] == want, (dilation, mask_type, p, i, j)
  # First pixel of the order sees nothing through the type-A mask.
  assert tl.kernel_masks(order, h, w, 3, 1, "A")[order[0]].sum() == 0


def _tiny_torch_model(**kw):
  torch.manual_seed(0)
  model = tl.OurPixelCNN(nr_resnet=1, nr_filters=8, kernel_size=3, max_dilation=2,
                         dropout_prob=0.0, **kw).eval()
  with torch.no_grad():  # move away from the init so every parameter matters
    for p in model.parameters():
      p.add_(0.3 * torch.randn_like(p))
  return model


@pytest.mark.parametrize("kw, shape, num_bins", [
    (dict(input_channels=1), (2, 2, 1), 4),
    (dict(input_channels=3), (1, 2, 3), 3),
    (dict(input_channels=1, binarize=True), (2, 2, 1), 2),
])
def test_torch_likelihood_sums_to_one(kw, shape, num_bins):
  model = _tiny_torch_model(num_bins=num_bins, **kw)
  h, w, c = shape
  levels = np.array(list(itertools.product(range(num_bins), repeat=h * w * c)), np.uint8)
  x = torch.from_numpy(levels.reshape(-1, h, w, c))
  order = np.arange(h * w)[::-1]
  with torch.no_grad():
    total = torch.logsumexp(-model.nll(x, order).double(), 0)
  assert abs(total.item()) < 1e-4


def test_torch_autoregressive_in_the_order():
  model = _tiny_torch_model(input_channels=3, num_bins=256)
  h, w = 6, 6
  order = np.random.default_rng(5).permutation(h * w)
  rng = np.random.default_rng(6)
  x = rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8)
  with torch.no_grad():
    base = model.conditional_log_prob(torch.from_numpy(x), order)[0].numpy().ravel()
    for pos in (0, 9, 20, 35):
      y = x.copy().reshape(1, h * w, 3)
      y[0, order[pos:]] = rng.integers(0, 256, (h * w - pos, 3))  # this and later pixels
      lp = model.conditional_log_prob(torch.from_numpy(y.reshape(x.shape)), order)[0]
      np.testing.assert_allclose(lp.numpy().ravel()[order[:pos]], base[order[:pos]], rtol=1e-5)
      if pos:
        assert not np.allclose(lp.numpy().ravel()[order[pos:]], base[order[pos:]])


def test_torch_naive_sampler_shapes_and_levels():
  model = _tiny_torch_model(input_channels=3, num_bins=5)
  g = torch.Generator().manual_seed(0)
  s = model.sample(2, (3, 3, 3), tl.s_curve_order(3, 3), generator=g)
  assert s.shape == (2, 3, 3, 3) and s.dtype == torch.uint8 and int(s.max()) < 5
  assert torch.isfinite(model.nll(s, tl.s_curve_order(3, 3))).all()


def test_torch_rejects_bad_input():
  model = _tiny_torch_model(input_channels=1, num_bins=4)
  with pytest.raises(ValueError, match=r"\[0, 3\]"):
    model.nll(torch.full((1, 2, 2, 1), 4, dtype=torch.uint8), np.arange(4))
  with pytest.raises(ValueError, match="permutation"):
    model.nll(torch.zeros((1, 2, 2, 1), dtype=torch.uint8), np.array([0, 0, 1, 2]))
  with pytest.raises(ValueError, match="binarised"):
    tl.OurPixelCNN(input_channels=3, binarize=True, num_bins=2)


# ---------------------------------------------------------------------------
# Import into dgmjax: parity and strictness
# ---------------------------------------------------------------------------

# name: (image_shape, num_bins, torch kwargs); dgmjax gets the same hyper-parameters.
PARITY_CONFIGS = {
    # the official binarised MNIST head (2-way softmax), PONO
    "binarized": ((8, 8, 1), 2, dict(binarize=True, normalization="pono")),
    # 10-component RGB mixture with coupling, PONO (the paper's CIFAR-10 setting)
    "rgb_dmol": ((8, 8, 3), 256, dict(normalization="pono")),
    # greyscale mixture, 17 levels, weight-normalised convs with the learned mask weight
    "grey_dmol_wn": ((6, 6, 1), 17, dict(normalization="weight_norm", conv_mask_weight=True)),
}


def _pair(name, resnets=1):
  (h, w, c), num_bins, kw = PARITY_CONFIGS[name]
  torch.manual_seed(0)
  tm = tl.OurPixelCNN(nr_resnet=resnets, nr_filters=16, nr_logistic_mix=10, input_channels=c,
                      kernel_size=3, max_dilation=2, dropout_prob=0.0, num_bins=num_bins,
                      **kw).eval()
  with torch.no_grad():  # away from the init, so a swapped or mis-transposed weight shows
    for p in tm.parameters():
      p.add_(0.1 * torch.randn_like(p))
  jm = dgmjax.models.create(
      "lmconv", image_shape=(h, w, c), num_bins=num_bins, filters=16, resnets=resnets,
      mixtures=10, kernel_size=3, max_dilation=2, orders=("s_curve",),
      normalization=kw["normalization"], mask_weight=kw.get("conv_mask_weight", False))
  return tm, jm


@pytest.fixture(scope="module")
def binarized_pair():
  return _pair("binarized")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PARITY_CONFIGS))
def test_parity_with_pytorch(name):
  tm, jm = _pair(name)
  _check_parity(tm, jm, load_lmconv(tm.state_dict(), jm))


def test_parity_with_pytorch_stacked_resnets():
  # nr_resnet=2: stacks of 2 (up_layers, down_layers_0) and 3 (down_layers_1/2) resnets
  tm, jm = _pair("grey_dmol_wn", resnets=2)
  variables = load_lmconv(tm.state_dict(), jm)
  stack = variables["params"]["down_layers_1"]["u_stream"]
  assert stack["conv_out"]["kernel"].shape[0] == 3
  sd = tm.state_dict()
  for j in range(3):   # slice j is the official resnet j
    np.testing.assert_array_equal(
        stack["conv_out"]["kernel"][j],
        sd[f"down_layers.1.u_stream.{j}.conv_out.weight_v"].numpy().transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(stack["nin_skip"]["scale"][j],
                                  sd[f"down_layers.1.u_stream.{j}.nin_skip.lin_a.weight_g"]
                                  .numpy()[:, 0])
  _check_parity(tm, jm, variables)


def _check_parity(tm, jm, variables):
  h, w, c = jm.image_shape
  rng = np.random.default_rng(0)
  x = rng.integers(0, jm.num_bins, (2, h, w, c)).astype(np.uint8)
  order = rng.permutation(h * w)  # any order, not only the configured one
  with torch.no_grad():
    want = tm.conditional_log_prob(torch.from_numpy(x), order).double().numpy()
  got = np.asarray(jm.conditional_log_prob(variables, jnp.asarray(x), order=order), np.float64)
  assert got.shape == (2, h, w)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
  np.testing.assert_allclose(got.sum(axis=(1, 2)), want.sum(axis=(1, 2)), rtol=1e-4)


def _flat(tree):
  return {jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_converted_tree_matches_init_structure(binarized_pair):
  tm, jm = binarized_pair
  got = load_lmconv(tm.state_dict(), jm)
  init = jax.eval_shape(jm.init, jax.random.PRNGKey(0), np.zeros((1,) + jm.image_shape, np.uint8))
  assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(init)
  for (k, a), b in zip(_flat(got).items(), jax.tree_util.tree_leaves(init)):
    assert a.shape == b.shape and a.dtype == np.float32, k


@pytest.mark.parametrize("name, image_shape, num_bins", [
    ("lmconv_mnist_tiny", (28, 28, 1), 2), ("lmconv_cifar_tiny", (32, 32, 3), 256)])
def test_official_reference_layouts_load(name, image_shape, num_bins):
  # Arrays shaped as the official OurPixelCNN's state_dict, independent of our baseline.
  ref = _reference(name)
  rng = np.random.default_rng(0)
  sd = {k: rng.standard_normal(shape).astype(np.float32) for k, shape in ref.items()}
  jm = dgmjax.models.create("lmconv", image_shape=image_shape, num_bins=num_bins, filters=16,
                            resnets=1, mixtures=10, kernel_size=3, max_dilation=2,
                            orders=("s_curve",), normalization="pono")
  params = load_lmconv(sd, jm)["params"]
  np.testing.assert_array_equal(params["u_init"]["kernel"],
                                np.transpose(sd["u_init.weight"], (2, 3, 1, 0)))
  np.testing.assert_array_equal(params["nin_out"]["kernel"], sd["nin_out.lin_a.weight_v"].T)
  np.testing.assert_array_equal(params["down_layers_2"]["u_stream"]["nin_skip"]["scale"][1],
                                sd["down_layers.2.u_stream.1.nin_skip.lin_a.weight_g"][:, 0])


def test_missing_key_is_named(binarized_pair):
  tm, jm = binarized_pair
  sd = dict(tm.state_dict())
  del sd["down_layers.1.u_stream.1.nin_skip.lin_a.weight_g"]
  with pytest.raises(ValueError, match=r"down_layers\.1\.u_stream\.1\.nin_skip\.lin_a\.weight_g"):
    load_lmconv(sd, jm)


def test_unexpected_key_is_named(binarized_pair):
  tm, jm = binarized_pair
  sd = dict(tm.state_dict())
  sd["up_layers.0.u_stream.0.extra.weight"] = torch.zeros(3)
  with pytest.raises(ValueError, match=r"up_layers\.0\.u_stream\.0\.extra\.weight"):
    load_lmconv(sd, jm)


def test_misshaped_key_is_named(binarized_pair):
  tm, jm = binarized_pair
  sd = dict(tm.state_dict())
  sd["u_init.weight"] = torch.zeros(16, 4, 3, 3)  # an RGB first layer for greyscale data
  with pytest.raises(ValueError, match=r"u_init\.weight.*\(16, 4, 3, 3\)"):
    load_lmconv(sd, jm)


def test_loads_pt_files_safely(binarized_pair, tmp_path):
  tm, jm = binarized_pair
  want = _flat(load_lmconv(tm.state_dict(), jm))
  # a bare state_dict, as torch.save(model.state_dict()) writes it
  path = tmp_path / "lmconv.pt"
  torch.save(tm.state_dict(), path)
  got = _flat(load_lmconv(str(path), jm))
  assert got.keys() == want.keys()
  for k in want:
    np.testing.assert_array_equal(got[k], want[k])
  # an official training checkpoint (main.py): weights under model_state_dict / ema_state_dict
  ema = {k: v + 1.0 for k, v in tm.state_dict().items()}
  ckpt = {"epoch": 3, "global_step": 10, "args": {"nr_filters": 16, "order": ["s_curve"]},
          "model_state_dict": tm.state_dict(), "ema_state_dict": ema}
  torch.save(ckpt, tmp_path / "0_ep3.pth")
  got = _flat(load_lmconv(tmp_path / "0_ep3.pth", jm))
  np.testing.assert_array_equal(got["['params']['u_init']['bias']"],
                                want["['params']['u_init']['bias']"])
  got_ema = _flat(load_lmconv(tmp_path / "0_ep3.pth", jm, use_ema=True))
  np.testing.assert_allclose(got_ema["['params']['u_init']['bias']"],
                             want["['params']['u_init']['bias']"] + 1.0)
  # something other than tensors and containers is refused, not unpickled
  torch.save({"model_state_dict": tm.state_dict(), "obj": _Unsafe()}, tmp_path / "bad.pt")
  with pytest.raises(ValueError, match="refusing"):
    load_lmconv(tmp_path / "bad.pt", jm)


class _Unsafe:
  pass
