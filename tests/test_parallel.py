"""Batches split over the local devices (ecjax.parallel) and the XLA CPU settings that give one
device per core (ecjax._platform)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecjax import _platform
from ecjax.parallel import device_count, over_devices

TWO = pytest.mark.skipif(device_count() < 2, reason="needs two local devices (one per core on a CPU)")


def _per_sample(x, w, scale):
    """Something per sample that a mixed-up split would get wrong: a running sum and a norm."""
    return {"cum": jnp.cumsum(x * w) * scale, "norm": jnp.sqrt(jnp.sum(x**2))[None] * scale}


@TWO
@pytest.mark.parametrize("B", [2, 7, 16])
def test_over_devices_equals_one_device(B):
    rng = np.random.default_rng(B)
    x = jnp.asarray(rng.normal(size=(B, 5)))
    w = jnp.asarray(rng.normal(size=(B, 5)))
    fn = jax.vmap(_per_sample, in_axes=(0, 0, None))
    split = jax.jit(over_devices(fn, batched=(0, 1)))(x, w, 3.0)
    ref = fn(x, w, 3.0)
    for k in ref:
        assert split[k].shape == ref[k].shape
        np.testing.assert_allclose(np.asarray(split[k]), np.asarray(ref[k]), rtol=1e-14)
    if B % device_count() == 0:  # the work really was split
        assert len(split["cum"].sharding.device_set) == device_count()


@TWO
def test_over_devices_batch_axis_elsewhere_in_the_output():
    """Outputs (R, S, ...) with the split sample axis second, as the closed-loop engine has."""
    x = jnp.arange(12.0).reshape(6, 2)
    deltas = jnp.asarray([1.0, 10.0, 100.0])

    def share(x, deltas):
        return jax.vmap(lambda d: x * d)(deltas)  # (R, S, 2)

    out = jax.jit(over_devices(share, batched=(0,), out_axis=1))(x, deltas)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(share(x, deltas)))


def _devices_in_subprocess(env):
    code = "import ecjax, jax, os, json; print(json.dumps([len(jax.devices('cpu')), os.environ.get('XLA_FLAGS', '')]))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_platform_flags_one_device_per_core_and_opt_out():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    cores = len(os.sched_getaffinity(0))
    n, flags = _devices_in_subprocess({**env, "ECJAX_XLA_TUNING": "1"})
    assert n == cores
    if cores > 1:
        assert f"--xla_force_host_platform_device_count={cores}" in flags
    if _platform._jaxlib_minor() == (0, 10):  # the emitter flags exist (and are set) on 0.10 only
        assert "--xla_cpu_use_fusion_emitters=false" in flags and "--xla_cpu_experimental_ynn_fusion_type=" in flags
    n, flags = _devices_in_subprocess({**env, "ECJAX_XLA_TUNING": "0"})
    assert n == 1 and flags == ""
    # a user's own setting wins
    n, flags = _devices_in_subprocess({**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=3"})
    assert n == 3 and flags.count("device_count") == 1
    n, flags = _devices_in_subprocess({**env, "XLA_FLAGS": "--xla_cpu_use_fusion_emitters=true"})
    assert flags.count("use_fusion_emitters") == 1 and "use_fusion_emitters=true" in flags
