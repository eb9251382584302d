"""Which executor a command asks for: a module of its own, so the local executor and the Ray executor (which
builds on it) never import each other."""

from __future__ import annotations

from harness.errors import ConfigError, UnknownNameError
from harness.run.executor import Executor, LocalExecutor

EXECUTORS = ("local", "ray")


def make_executor(name: str = "local", address: str | None = None) -> Executor:
    """The executor `harness run --executor NAME [--address ADDRESS]` asks for; Ray is imported only for `ray`."""
    if name == "local":
        if address:
            raise ConfigError("--address is the Ray cluster to run on: it needs --executor ray")
        return LocalExecutor()
    if name == "ray":
        from harness.run.ray_executor import RayExecutor

        return RayExecutor(address)
    raise UnknownNameError("executor", name, EXECUTORS)
