import os
from pathlib import Path

import pytest

# Almost every test compiles a closed loop or a QP solver that then runs for well under a
# second: LLVM's optimization passes are most of a test's time (a closed loop of 5 agents: 31 s
# to compile at the default level, 18 s without them; 0.06 s against 0.15 s to run). The
# passes that XLA runs on the HLO graph, which decide the arithmetic, stay on. Subprocesses
# inherit the setting through the environment. Tests whose time is running time get the
# full optimization back: the QP fuzz suite's slow lane through the `optimized` fixture (so
# the build a user runs is fuzzed too), the memory test through its subprocess's environment.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

# Many tests build their own jitted closures of the same computations (a closed loop of the
# same community, the same QP operator); XLA's persistent cache lets them share compilations
# by HLO, also with the subprocesses that some tests start (through the environment).
_cache = Path(os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(__file__).parent.parent / ".pytest_cache" / "jax")))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
jax.config.update("jax_compilation_cache_dir", str(_cache))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


@pytest.fixture
def optimized():
    """XLA's full optimization for this test (the default of a user's run)."""
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", False)
    yield
    jax.config.update("jax_disable_most_optimizations", before)
