"""Loss, the donated and explicitly sharded train step, and the eval step."""
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from synthjax.models.llama import Transformer


def token_losses(model: Transformer, params, batch, z_loss: float = 0.0):
  """Per-token cross-entropy (+ z-loss) and the weights saying which tokens count."""
  logits_BxTxV = model.apply({"params": params}, batch["inputs"], batch["positions"],
                             batch["segment_ids"])
  log_z_BxT = jax.nn.logsumexp(logits_BxTxV, axis=-1)
  target_logit = jnp.take_along_axis(logits_BxTxV, batch["targets"][..., None], -1)[..., 0]
  ce_BxT = log_z_BxT - target_logit
  weights_BxT = batch["weights"].astype(jnp.float32)
  return ce_BxT, z_loss * jnp.square(log_z_BxT), weights_BxT


def make_train_step(model: Transformer, tx: optax.GradientTransformation, lr_fn: Callable,
                    state_shardings, batch_sharding, rules, mesh, grad_accum: int = 1,
                    z_loss: float = 0.0):
  """One jitted step: state donated, shardings explicit. With grad_accum > 1 the batch is
  split into that many microbatches whose gradients are summed before one update."""

  def loss_fn(params, micro):
    ce, zl, w = token_losses(model, params, micro, z_loss)
    return jnp.sum((ce + zl) * w), (jnp.sum(ce * w), jnp.sum(w))

  def step(state, batch):
    grad_fn = jax.grad(loss_fn, has_aux=True)
    if grad_accum == 1:
      grads, (ce_sum, n) = grad_fn(state["params"], batch)
    else:
      micro = jax.tree.map(lambda x: x.reshape(grad_accum, -1, *x.shape[1:]), batch)

      def body(carry, mb):
        g, c, k = carry
        mg, (mc, mk) = grad_fn(state["params"], mb)
        return (jax.tree.map(jnp.add, g, mg), c + mc, k + mk), None
      zeros = jax.tree.map(jnp.zeros_like, state["params"])
      (grads, ce_sum, n), _ = jax.lax.scan(body, (zeros, 0.0, 0.0), micro)
    grads = jax.tree.map(lambda g: g / jnp.maximum(n, 1.0), grads)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics = {"train/loss": ce_sum / jnp.maximum(n, 1.0), "train/tokens": n,
               "grad_norm": optax.tree.norm(grads), "lr": lr_fn(state["step"])}
    return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, metrics

  jitted = jax.jit(step, in_shardings=(state_shardings, batch_sharding),
                   out_shardings=(state_shardings, None), donate_argnums=(0,))

  def run(state, batch):
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      return jitted(state, batch)
  return run


def make_eval_step(model: Transformer, param_shardings, batch_sharding, rules, mesh):
  """Summed token loss and token count of one batch (so domains can be token-weighted)."""

  def step(params, batch):
    ce, _, w = token_losses(model, params, batch)
    return jnp.sum(ce * w), jnp.sum(w)

  jitted = jax.jit(step, in_shardings=(param_shardings, batch_sharding))

  def run(params, batch):
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      return jitted(params, batch)
  return run
