"""The model's matrix products, one helper so every product accumulates the same way."""

import jax
import jax.numpy as jnp


def dot(equation: str, a, b, out_dtype=None):
  """einsum returned in `out_dtype` (default: a's dtype). On a CPU, products accumulate in f32
  explicitly: XLA:CPU runs a bf16-out product about 5x slower (measured here; bf16 in, f32 out
  reaches its oneDNN/AMX kernels). TPUs and GPUs accumulate bf16 products in f32 anyway, and
  asking there would make the backward pass's products f32."""
  if jax.default_backend() == "cpu":
    return jnp.einsum(equation, a, b, preferred_element_type=jnp.float32).astype(
        out_dtype or a.dtype
    )
  return jnp.einsum(equation, a, b).astype(out_dtype or a.dtype)
