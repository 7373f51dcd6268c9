"""The one list of deploy targets: name, label, deployer class and the options each one takes.

Read by ``deployers.registry`` (which class deploys), the CLI's ``pocketops deploy`` parser (its
``--target`` choices and flags) and the dashboard's Deploy form (its target list, and which
option its Name and Port fields fill). This module imports nothing heavy: the dashboard loads it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# Every runtime a bundle's predictor serves (core.runtimes.RUNTIMES): ONNX Runtime, ExecuTorch, LiteRT.
ALL_RUNTIMES = ("onnxruntime", "executorch", "litert")


@dataclass(frozen=True)
class Option:
    """One deploy option: its key in the options dict, its CLI flag, type, default and help."""

    key: str
    flag: str
    type: type | Callable[[str], object]  # bool: a flag; otherwise parses the CLI's text
    default: object = None  # what the deployer uses when the option is left out (None: it decides)
    help: str = ""
    metavar: str | None = None
    also: tuple[str, ...] = ()  # further option keys that take the same value (a Space id is its repo id)

    def keys(self) -> tuple[str, ...]:
        """The option keys this option fills."""
        return (self.key, *self.also)


@dataclass(frozen=True)
class Target:
    """A place a variant can be deployed to."""

    name: str
    label: str  # for the dashboard's target list
    short: str  # for the Deploy panel's narrow table
    deployer: str  # "module:Class", imported only when used
    options: tuple[str, ...]  # the keys of OPTIONS this target reads
    line_option: str  # the option that names a release line (the form's Name field)
    runtimes: tuple[str, ...] = ALL_RUNTIMES  # the runtimes (core.runtimes names) of the models it serves
    only_onnx: str = ""  # why it serves ONNX models only (said when it refuses another)


def requests_count(value: str) -> int:
    """A whole number of requests (``50000``, ``50,000`` or ``50_000``), 0 or more."""
    import argparse

    try:
        number = int(str(value).replace(",", "").replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of requests, e.g. 50000, not {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more requests, not {number}")
    return number


OPTIONS: dict[str, Option] = {o.key: o for o in (
    Option("host", "--host", str, "127.0.0.1",
           "local: address to bind (default 127.0.0.1; anything else needs an API key)"),
    Option("port", "--port", int, 8765, "local: port (default 8765; 0 picks a free one)"),
    Option("name", "--name", str, "local", "local: name of the release line (default 'local'); give each model its "
                                           "own name and --port to serve several side by side"),
    Option("api_key", "--api-key", str, None, "local/docker: key clients send as X-API-Key (prefer "
                                              "$POCKETOPS_API_KEY: a command line is visible to other processes)"),
    Option("space_id", "--space", str, None, "Spaces: repo id, e.g. you/digits-demo", metavar="ID", also=("repo_id",)),
    Option("private", "--private", bool, False, "Spaces: create the Space private"),
    Option("hardware", "--hardware", str, "cpu-basic", "spaces-docker: hardware flavour (default cpu-basic)"),
    Option("project", "--project", str, None, "gcp: project id (default: from Application Default Credentials)"),
    Option("region", "--region", str, "us-central1", "gcp: region (default us-central1)"),
    Option("function_name", "--function", str, "pocketops-predict", "gcp: function name", metavar="NAME"),
    Option("public", "--public", bool, False, "gcp: let anyone invoke the function (default: private, callers need "
                                              "a Google identity token)"),
    Option("wait_s", "--wait", float, None, "Spaces: wait up to SECONDS for the Space to run, to record its cold start",
           metavar="SECONDS"),
    Option("vendor_ort", "--vendor-ort", str, None,
           "spaces-static: copy onnxruntime-web from DIR instead of its CDN", metavar="DIR"),
    Option("requests_per_month", "--requests-per-month", requests_count, None,
           "gcp: the traffic the plan's cost and the budget check assume (default 10,000)", metavar="N"),
)}

TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("local", "local (this device)", "local", "deployers.local:LocalDeployer",
           ("host", "port", "name", "api_key"), "name"),
    Target("spaces-static", "Spaces static (free)", "static", "deployers.spaces:StaticSpaceDeployer",
           ("space_id", "private", "wait_s", "vendor_ort"), "space_id", ("onnxruntime",),
           "the page runs the model in the browser with onnxruntime-web, which loads only ONNX"),
    Target("spaces-docker", "Spaces docker (paid)", "docker", "deployers.spaces:DockerSpaceDeployer",
           ("space_id", "private", "hardware", "wait_s", "api_key"), "space_id"),
    Target("gcp", "Google Cloud function", "gcp", "deployers.gcp:CloudRunFunctionDeployer",
           ("project", "region", "function_name", "public", "api_key", "requests_per_month"), "function_name",
           ("onnxruntime",), "its function installs numpy and onnxruntime only"),
)}


def refusal(target: str, model_path: str | Path, what: str = "") -> str | None:
    """None when ``target`` serves the model file's runtime, else the one-line refusal naming the targets that do.

    ``what`` names the model in the message (``variant 7 (litert-int8)``); by default its file name.
    """
    from core.runtimes import runtime_of  # stdlib only: cheap where the dashboard loads this module

    t = TARGETS.get(target)
    rt = runtime_of(model_path)
    if t is None or rt.name in t.runtimes:
        return None
    serving = [name for name, other in TARGETS.items() if rt.name in other.runtimes]
    article = "an" if rt.label[0] in "AEIOU" else "a"
    return (f"{what or Path(model_path).name} is {article} {rt.label} model ({Path(model_path).suffix}): {target} cannot "
            f"serve it ({t.only_onnx or 'it serves ONNX models only'}); deploy it with "
            + " or ".join(f"--target {name}" for name in serving)
            + ", or deploy an ONNX variant (.onnx/.ort) of the same run to " + target)


def names() -> tuple[str, ...]:
    """The target names, in the order people are offered them."""
    return tuple(TARGETS)


def line_options(target: str, value: str) -> dict:
    """The options that name release line ``value`` on ``target`` (the form's Name field)."""
    option = OPTIONS[TARGETS[target].line_option]
    return {key: value for key in option.keys()}


def release_label(row: dict) -> str:
    """``local v3`` / ``spaces-static me/digits v2``: the target, its line name when it says more, the version."""
    name = f" {row['name']}" if row.get("name") and row["name"] != row["target"] else ""
    return f"{row['target']}{name} v{row['version']}"
