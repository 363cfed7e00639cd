"""What a traced function actually does: every equation of a jaxpr, nested ones included,
so tests can check that an option reached the computation (a remat policy, a dtype, a
convolution formulation, the init PRNG) instead of only that the results agree."""

from __future__ import annotations

import jax


def equations(fn, *args):
  """All equations of ``jax.make_jaxpr(fn)(*args)``, with those of nested jaxprs."""
  def walk(jaxpr):
    for e in jaxpr.eqns:
      yield e
      for p in e.params.values():
        for q in (p if isinstance(p, (list, tuple)) else [p]):
          inner = getattr(q, "jaxpr", q)
          if hasattr(inner, "eqns"):
            yield from walk(inner)
  return list(walk(jax.make_jaxpr(fn)(*args).jaxpr))

