"""Target name -> deployer class, imported lazily (a target's client library loads only when used)."""
from __future__ import annotations

import importlib

from core.optional import MissingDependency
from deployers import targets
from deployers.base import DeployError, Deployer

# Target name -> "module:Class", from the one list of targets (deployers.targets).
TARGETS: dict[str, str] = {name: t.deployer for name, t in targets.TARGETS.items()}


def get(target: str, **client_options) -> Deployer:
    """A deployer for ``target``; ``client_options`` go to its constructor (endpoints, credentials in tests)."""
    spec = TARGETS.get(target)
    if spec is None:
        raise DeployError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    module_name, _, cls_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise DeployError(f"target {target!r} is not available in this build ({module_name} is missing)") from exc
        raise MissingDependency(exc.name or module_name, f"Deploying to {target}") from exc
    return getattr(module, cls_name)(**client_options)
