"""XLA settings for the CPU backend, applied when ecjax is imported (before jax starts its
backends; a process that already ran a jax computation keeps what it has).

- One XLA CPU device per core (`--xla_force_host_platform_device_count`): a batch of QPs or
  closed loops is split over the devices (`ecjax.parallel`), each device running its share on
  one core. XLA's own intra-op threading gains nothing on these kernels (small arrays, ~10³
  elements per sample): on 2 cores the paper case's agent QPs run ~1.7x faster per QP split
  over two devices than on one device with two threads (docs/performance.md).
- YNNPACK fusions off (`--xla_cpu_experimental_ynn_fusion_type=`) and XLA's classic loop
  emitters instead of its MLIR fusion emitters (`--xla_cpu_use_fusion_emitters=false`), both
  on jaxlib 0.10 only, where the flags are known to exist (XLA aborts on flags it does not
  know). Both measured on the solvers' kernels (many small fusions, reductions over small
  axes): YNNPACK fusions ~1.6x slower, the MLIR emitters ~1.2x slower per interior-point
  iteration (docs/performance.md).

Set `ECJAX_XLA_TUNING=0` to leave XLA_FLAGS alone; flags already in XLA_FLAGS are respected.
"""

from __future__ import annotations

import os
import sys


def _cores() -> int:
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return max(os.cpu_count() or 1, 1)


def _backends_started() -> bool:
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except Exception:  # an internal API: if it moved, assume the worst and change nothing
        return True


def _jaxlib_minor() -> tuple[int, int] | None:
    try:
        from importlib.metadata import version

        major, minor = version("jaxlib").split(".")[:2]
        return int(major), int(minor)
    except Exception:
        return None


def configure() -> list[str]:
    """Add ecjax's CPU flags to XLA_FLAGS (if allowed and still effective); returns those added."""
    if os.environ.get("ECJAX_XLA_TUNING", "1") == "0" or _backends_started():
        return []
    flags = os.environ.get("XLA_FLAGS", "")
    added = []
    if "xla_force_host_platform_device_count" not in flags and _cores() > 1:
        added.append(f"--xla_force_host_platform_device_count={_cores()}")
    if _jaxlib_minor() == (0, 10):
        if "xla_cpu_experimental_ynn_fusion_type" not in flags:
            added.append("--xla_cpu_experimental_ynn_fusion_type=")
        if "xla_cpu_use_fusion_emitters" not in flags:
            added.append("--xla_cpu_use_fusion_emitters=false")
    if added:
        os.environ["XLA_FLAGS"] = " ".join([flags, *added]).strip()
    return added
