"""The same batch on 1, 2 and 4 XLA CPU devices (`ecjax.parallel`): the automatic chunk is one
(risk level, sample) pair per device, so each device count runs another split of the batch,
padding included (5 samples × 2 risk levels over 4 devices). The results are the same up to
rounding: each sample's closed loop is the same per-sample program whatever the split.

The device count of a process is fixed when jax starts its backends, so the runs on 1 and 4
devices are subprocesses (`XLA_FLAGS=--xla_force_host_platform_device_count`); the rest of
the suite runs with one device per core (2 on CI's machine). Small sizes: 4 agents, N = 4,
T = 3.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

_RUN = """
import json, sys
import jax
jax.config.update("jax_enable_x64", True)
from ecjax import experiment
from ecjax.community import generate_community
from ecjax.disturbance import synthetic_profiles
from ecjax.fcmpc import FCMPCSettings
from ecjax.simulate import Options
from ecjax.weights import CostWeights

c, prof = generate_community(4, prosumer_share=0.5, seed=1), synthetic_profiles(4, seed=1)
res = experiment.run_batch(
    c, prof, [0.05, 0.2], 5, options=Options(scenario="ccdmpc", T=3), N=4,
    fc=FCMPCSettings(kappa=1e-3, p_max=5), weights=CostWeights(), seed=2,
)
out = {k: res.summary[k].values.tolist() for k in sorted(res.summary.data_vars)}
print(json.dumps({"devices": len(jax.devices()), "summary": out}))
"""


def _run(devices: int) -> dict:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    out = subprocess.run([sys.executable, "-c", _RUN], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_results_do_not_depend_on_the_device_count():
    runs = {n: _run(n) for n in (1, 4)}
    assert [r["devices"] for r in runs.values()] == [1, 4]
    got, ref = runs[4]["summary"], runs[1]["summary"]
    assert set(got) == set(ref) and {"E1", "iters", "qp_status"} <= set(ref)
    for k in ref:
        a, b = np.asarray(got[k], dtype=np.float64), np.asarray(ref[k], dtype=np.float64)
        assert a.shape == b.shape, k
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-7, err_msg=f"{k}: 4 devices against 1")
