"""Batches split over the local devices: one XLA device per CPU core (`ecjax._platform`), or
every local GPU. Each device runs the same vmapped program on its share of the batch, so the
numerics stay written for one instance, vmapped once, and this is the only place that knows
about devices.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

AXIS = "batch"

try:  # jax >= 0.6
    _shard_map = functools.partial(jax.shard_map, check_vma=False)
except AttributeError:  # pragma: no cover - older jax
    from jax.experimental.shard_map import shard_map as _sm

    _shard_map = functools.partial(_sm, check_rep=False)


def device_count() -> int:
    return len(jax.local_devices())


@functools.lru_cache(maxsize=None)
def _mesh(n: int) -> Mesh:
    return Mesh(np.array(jax.local_devices()[:n]), (AXIS,))


def _pad(x, pad):
    """x with its last entry along axis 0 repeated `pad` times (a real sample, never NaN)."""
    return jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)], axis=0) if pad else x


def over_devices(fn, batched: tuple[int, ...], out_axis: int = 0, devices: int | None = None):
    """`fn(*args)` with the leading axis of the arguments `batched` (positions) split over the
    local devices; the results are joined along `out_axis` (every output leaf has the batch
    there). A batch that does not divide evenly is padded with copies of its last sample (cut
    off again). With one device (or a batch smaller than two) it is `fn` itself."""

    def run(*args):
        n = devices or device_count()
        leaves = [leaf for i in batched for leaf in jax.tree_util.tree_leaves(args[i])]
        size = leaves[0].shape[0] if leaves else 0
        n = min(n, size)
        if n <= 1:
            return fn(*args)
        pad = (-size) % n
        args = tuple(jax.tree_util.tree_map(lambda v: _pad(v, pad), a) if i in batched else a for i, a in enumerate(args))
        spec_in = tuple(PartitionSpec(AXIS) if i in batched else PartitionSpec() for i in range(len(args)))
        spec_out = PartitionSpec(*([None] * out_axis), AXIS)
        out = _shard_map(fn, mesh=_mesh(n), in_specs=spec_in, out_specs=spec_out)(*args)
        if not pad:
            return out
        return jax.tree_util.tree_map(lambda v: jax.lax.slice_in_dim(v, 0, size, axis=out_axis), out)

    return run
