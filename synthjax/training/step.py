"""Loss, the donated and explicitly sharded train step, and the eval step."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from synthjax.models.llama import Transformer
from synthjax.sharding import BATCH_AXES


def token_losses(model: Transformer, params, batch, z_loss: float = 0.0):
  """Per-token cross-entropy (+ z-loss) and the weights saying which tokens count."""
  # apply returns the logits alone (no mutable collections asked for)
  logits_BxTxV: jax.Array = model.apply(  # type: ignore[assignment]
      {"params": params}, batch["inputs"], batch["positions"], batch["segment_ids"]
  )
  log_z_BxT = jax.nn.logsumexp(logits_BxTxV, axis=-1)
  target_logit = jnp.take_along_axis(logits_BxTxV, batch["targets"][..., None], -1)[..., 0]
  ce_BxT = log_z_BxT - target_logit
  weights_BxT = batch["weights"].astype(jnp.float32)
  return ce_BxT, z_loss * jnp.square(log_z_BxT), weights_BxT


def microbatches(x, n: int, mesh):
  """[B, ...] -> [n, B / n, ...] where microbatch m takes rows m, m + n, m + 2n, ...: every
  device's own rows feed every microbatch, so all devices work on each one (a contiguous split
  would put microbatch 0 on the first devices only), and no row moves between devices."""
  split = x.reshape(-1, n, *x.shape[1:]).swapaxes(0, 1)
  return jax.lax.with_sharding_constraint(split, NamedSharding(mesh, P(None, BATCH_AXES)))


def make_train_step(
    model: Transformer,
    tx: optax.GradientTransformation,
    state_shardings,
    batch_sharding,
    rules,
    mesh,
    grad_accum: int = 1,
    z_loss: float = 0.0,
):
  """One jitted step `(state, batch, lr) -> (state, metrics)`: state donated, shardings
  explicit, the learning rate an input (tx ends in scale(-1)). With grad_accum > 1 the batch
  is split into that many microbatches whose gradients are summed before one update."""

  def loss_fn(params, micro):
    ce, zl, w = token_losses(model, params, micro, z_loss)
    return jnp.sum((ce + zl) * w), (jnp.sum(ce * w), jnp.sum(w))

  def step(state, batch, lr):
    grad_fn = jax.grad(loss_fn, has_aux=True)
    if grad_accum == 1:
      grads, (ce_sum, n) = grad_fn(state["params"], batch)
    else:
      micro = jax.tree.map(lambda x: microbatches(x, grad_accum, mesh), batch)

      def body(carry, mb):
        g, c, k = carry
        mg, (mc, mk) = grad_fn(state["params"], mb)
        return (jax.tree.map(jnp.add, g, mg), c + mc, k + mk), None

      zeros = jax.tree.map(jnp.zeros_like, state["params"])
      (grads, ce_sum, n), _ = jax.lax.scan(body, (zeros, 0.0, 0.0), micro)
    grads = jax.tree.map(lambda g: g / jnp.maximum(n, 1.0), grads)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    updates = jax.tree.map(lambda u: (lr * u).astype(u.dtype), updates)
    params = optax.apply_updates(state["params"], updates)
    metrics = {
        "train/loss": ce_sum / jnp.maximum(n, 1.0),
        "train/tokens": n,
        "grad_norm": optax.tree.norm(grads),
        "lr": lr,
    }
    return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, metrics

  jitted = jax.jit(
      step,
      in_shardings=(state_shardings, batch_sharding, None),
      out_shardings=(state_shardings, None),
      donate_argnums=(0,),
  )

  def run(state, batch, lr):
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      return jitted(state, batch, jnp.asarray(lr, jnp.float32))

  return run


def make_eval_step(model: Transformer, param_shardings, batch_sharding, rules, mesh):
  """Every target's loss (0 where its weight is 0) and its weight, [batch, seq] each,
  replicated so that every host can attribute losses to documents."""

  def step(params, batch):
    ce, _, w = token_losses(model, params, batch)
    return ce * w, w

  replicated = NamedSharding(mesh, P())
  jitted = jax.jit(
      step, in_shardings=(param_shardings, batch_sharding), out_shardings=(replicated, replicated)
  )

  def run(params, batch):
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      return jitted(params, batch)

  return run
