"""All partitioning lives here: the mesh, logical-axis rules, born-sharded params, multi-host.

The model names every parameter and key activation by logical axes ("embed", "heads", ...);
the rules below map those names to mesh axes. Data parallelism shards the batch over
("data", "fsdp"); FSDP additionally shards the "embed" dimension of every weight over "fsdp";
tensor parallelism shards heads, mlp and vocab over "tensor". One mesh size may be -1 and is
filled from the device count.
"""

import math
import os
from typing import Callable, Mapping, Optional, Sequence, Tuple, Union

import flax.linen as nn
import gin
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from synthjax.errors import UserError

# logical axis -> mesh axis, several mesh axes, or None (replicated)
Rules = Tuple[Tuple[str, Union[str, Tuple[str, ...], None]], ...]

DEFAULT_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("head_dim", None),
    ("length", None),
    ("norm", None),
    ("layers", None),
)
BATCH_AXES = ("data", "fsdp")


@gin.configurable
def logical_axis_rules(rules: Rules = DEFAULT_RULES) -> Rules:
  return tuple((name, tuple(ax) if isinstance(ax, list) else ax) for name, ax in rules)


@gin.configurable
def make_mesh(
    axes: Union[Mapping[str, int], Sequence[Tuple[str, int]]] = (
        ("data", -1),
        ("fsdp", 1),
        ("tensor", 1),
    ),
    devices: Optional[Sequence[jax.Device]] = None,
    dcn_axes: Optional[Mapping[str, int]] = None,
) -> Mesh:
  """A Mesh with the named axes laid out along the interconnect (jax's mesh_utils: devices
  that talk most are neighbours); one size may be -1 and takes the remaining devices.

  `dcn_axes` (e.g. {'data': 2} for two TPU slices) says how much of an axis spans the slower
  data-center network: that axis is split slice-major, so only its gradient all-reduce crosses
  slices. Devices without a slice (GPU hosts, CPU) count each process as one granule."""
  devices = list(devices if devices is not None else jax.devices())
  sizes = mesh_shape(dict(axes), len(devices))
  shape = tuple(sizes.values())
  dcn = dict(dcn_axes or {})
  if not any(n > 1 for n in dcn.values()):
    grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
    return Mesh(grid, tuple(sizes))
  bad = [a for a in dcn if a not in sizes or sizes[a] % dcn[a]]
  if bad:
    raise UserError(
        f"make_mesh.dcn_axes {dcn}: {bad[0]!r} is not an axis of {sizes} that its size divides"
    )
  dcn_shape = tuple(dcn.get(a, 1) for a in sizes)
  ici_shape = tuple(n // d for n, d in zip(shape, dcn_shape))
  by_process = devices[0].platform != "tpu"
  granules = {d.process_index if by_process else d.slice_index for d in devices}
  if len(granules) != math.prod(dcn_shape):
    kind = "processes" if by_process else "slices"
    raise UserError(
        f"make_mesh.dcn_axes {dcn} needs {math.prod(dcn_shape)} slices, but the "
        f"devices are in {len(granules)} {kind}"
    )
  grid = mesh_utils.create_hybrid_device_mesh(
      ici_shape, dcn_shape, devices, process_is_granule=by_process, allow_split_physical_axes=True
  )
  return Mesh(grid, tuple(sizes))


def mesh_shape(axes: Mapping[str, int], n_devices: int) -> dict:
  """The axes' sizes on n devices, the -1 axis (at most one) filled in."""
  axes = dict(axes)
  unknown = [a for a, s in axes.items() if s == -1]
  if len(unknown) > 1:
    raise UserError(f"make_mesh.axes {axes}: at most one axis may be -1")
  known = math.prod(s for s in axes.values() if s != -1)
  if unknown:
    if n_devices % known:
      raise UserError(f"make_mesh.axes {axes}: {n_devices} devices are not divisible by {known}")
    axes[unknown[0]] = n_devices // known
  if math.prod(axes.values()) != n_devices:
    raise UserError(
        f"make_mesh.axes {axes} needs {math.prod(axes.values())} devices, "
        f"but {n_devices} are available"
    )
  return axes


def configured_axes() -> dict:
  """make_mesh's axes as gin binds them (its default otherwise)."""
  import inspect

  default = inspect.signature(make_mesh).parameters["axes"].default
  return dict(gin.get_bindings(make_mesh).get("axes", default))


def fit_spec(spec: P, shape, mesh_shape: Mapping[str, int]) -> P:
  """Drop mesh axes from dimensions they do not divide (e.g. 3 kv heads on 4 tensor shards):
  that dimension is replicated instead of failing."""
  out = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    kept = tuple(a for a in names if dim % mesh_shape[a] == 0)
    while kept and dim % math.prod(mesh_shape[a] for a in kept):
      kept = kept[:-1]
    out.append(kept[0] if len(kept) == 1 else (kept or None))
  return P(*out)


def _fit(spec: P, shape, mesh: Mesh) -> P:
  return fit_spec(spec, shape, mesh.shape)


def logical_shardings(boxed_tree, mesh: Mesh, rules: Rules):
  """NamedShardings for a tree of nn.Partitioned (or abstract) leaves; plain leaves replicate."""
  specs = nn.get_partition_spec(boxed_tree)
  mesh_specs = nn.logical_to_mesh(specs, rules)
  unboxed = nn.unbox(boxed_tree)
  fitted = jax.tree.map(
      lambda spec, leaf: NamedSharding(mesh, _fit(spec, leaf.shape, mesh)),
      mesh_specs,
      unboxed,
      is_leaf=lambda x: isinstance(x, P),
  )
  return fitted


def sharded_initializer(init_fn: Callable, mesh: Mesh, rules: Rules, *example_args):
  """A jitted `init(*args)` for `init_fn` (returning a boxed Flax variable tree) whose every
  leaf is born on its final shards, so no host or single device ever holds the whole model;
  with the abstract (boxed) tree and the shardings. Keep `init` to compile it once."""
  abstract = jax.eval_shape(init_fn, *example_args)
  shardings = logical_shardings(abstract, mesh, rules)
  jitted = jax.jit(lambda *a: nn.unbox(init_fn(*a)), out_shardings=shardings)

  def init(*args):
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      return jitted(*args)

  return init, abstract, shardings


def init_sharded(init_fn: Callable, mesh: Mesh, rules: Rules, *args):
  """Run `init_fn(*args)` once, born sharded (see sharded_initializer)."""
  init, _, shardings = sharded_initializer(init_fn, mesh, rules, *args)
  return init(*args), shardings


def named(mesh: Mesh, rules: Rules, logical_axes, shape) -> NamedSharding:
  """The sharding of one array with the given logical axes (indivisible axes replicated)."""
  spec = nn.logical_to_mesh_axes(logical_axes, rules) or P()
  return NamedSharding(mesh, _fit(spec, shape, mesh))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh):
  """Assemble one global array per field from each host's own rows (no host holds others')."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}


def on_cloud_tpu_vm() -> bool:
  """TPU chips on this machine, found as JAX's TPU cluster detection finds them (their device
  files), without starting a backend (jax.distributed must come first)."""
  import glob

  return bool(glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*"))


@gin.configurable
def init_distributed(
    coordinator_address: Optional[str] = None,
    num_processes: Optional[int] = None,
    process_id: Optional[int] = None,
    cpu_collectives: str = "gloo",
) -> None:
  """Join a multi-host JAX system when asked to, from arguments or the environment
  (SYNTHJAX_COORDINATOR, SYNTHJAX_NUM_PROCESSES, SYNTHJAX_PROCESS_ID: what the Ray and local
  launchers pass). On a Cloud TPU VM with none of them, always: jax.distributed finds the
  slice's workers itself there (its documentation: on TPU every argument is optional), and a
  pod's workers must join whatever the launcher (gcloud ssh --worker=all, Ray) set. Elsewhere,
  with nothing set, this is one host and does nothing."""
  coordinator_address = coordinator_address or os.environ.get("SYNTHJAX_COORDINATOR")
  if num_processes is None and "SYNTHJAX_NUM_PROCESSES" in os.environ:
    num_processes = int(os.environ["SYNTHJAX_NUM_PROCESSES"])
  if process_id is None and "SYNTHJAX_PROCESS_ID" in os.environ:
    process_id = int(os.environ["SYNTHJAX_PROCESS_ID"])
  if coordinator_address is None and num_processes is None:
    if on_cloud_tpu_vm():
      jax.distributed.initialize()
    return
  # Only affects CPU devices; set before any backend starts (initialize must come first).
  jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  jax.distributed.initialize(
      coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
  )
