"""Ray is an optional extra: one place imports it, names the extra when it is missing, and connects.

`harness run --executor ray` and the data-parallel extraction both go through `init_ray`, so the
address rules (none: start a local instance; `auto`; `ray://HOST:PORT`) are the same everywhere.
"""

from __future__ import annotations

import os
from typing import Any

from harness.errors import HarnessError

EXTRA_HINT = "pip install 'vision-harness[ray]'  (from a clone: pip install -e '.[ray]')"


def require_ray() -> Any:
    """The `ray` module, or a HarnessError naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise HarnessError(f"the Ray executor needs the optional extra 'ray', which is not installed: {EXTRA_HINT}"
                           ) from None
    return ray


def init_ray(address: str | None = None, num_cpus: int | None = None) -> Any:
    """Connect to `address` (`auto`, `ray://HOST:PORT`, `HOST:PORT`) or, without one, start a local instance.

    The driver's harness environment (HARNESS_*, MLFLOW_*, HF_*) travels to the workers, so a job reads
    the same data, cache and weights wherever it runs. A local instance also gets the driver's resolved
    home, data and cache folders: their defaults depend on the working directory, and a Ray worker's is
    not the driver's. Idempotent: an initialised Ray is reused.
    """
    ray = require_ray()
    if ray.is_initialized():
        return ray
    env = {k: v for k, v in os.environ.items() if k.startswith(("HARNESS_", "MLFLOW_", "HF_", "TORCH_HOME"))}
    if not address:
        from harness.paths import cache_root, data_root, harness_home

        env.update(HARNESS_HOME=str(harness_home()), HARNESS_DATA=str(data_root().resolve()),
                   HARNESS_CACHE=str(cache_root().resolve()))
    runtime_env = {"env_vars": env} if env else None
    kwargs: dict[str, Any] = {"runtime_env": runtime_env, "log_to_driver": False}
    if address:
        kwargs["address"] = address
    else:
        kwargs.update(include_dashboard=False, num_cpus=num_cpus)
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:
        raise HarnessError(f"cannot reach the Ray cluster at '{address}': {exc}") from None
    return ray


def require_cluster_gpu(ray: Any, what: str) -> None:
    """A CUDA task on a Ray cluster without GPUs would wait for one forever: one line instead, before any task."""
    if ray.cluster_resources().get("GPU", 0) < 1:
        raise HarnessError(f"{what} on CUDA need a GPU, and the Ray cluster has none; use --device cpu, or a "
                           "cluster with GPUs")
