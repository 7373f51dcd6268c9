"""`pocketops cluster add|list|check|remove`: the Ray clusters that `train/export --on NAME` send jobs to."""
from __future__ import annotations

from tui.commands._common import CliError, add_parser, emit, open_db


def register(sub) -> None:
    p = add_parser(sub, "cluster", "Ray clusters for `--on NAME` (the phone talks to their Jobs API over HTTP)")
    csub = p.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)
    a = add_parser(csub, "add", "remember a cluster: its Ray dashboard address and where its token is")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--address", required=True, help="the Ray dashboard URL, e.g. http://head:8265")
    a.add_argument("--token-env", default=None, metavar="VAR",
                   help="environment variable holding the token (default: RAY_AUTH_TOKEN, "
                        "RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token, as Ray looks)")
    a.add_argument("--shared-dir", default=None, metavar="PATH",
                   help="a directory the cluster and this machine both see; results come back through it "
                        "(default: this store's files directory, right for a head on this machine)")
    a.set_defaults(func=_add)
    ls = add_parser(csub, "list", "clusters with whether they answer and their Ray version")
    ls.set_defaults(func=_list)
    c = add_parser(csub, "check", "contact a cluster: reachable, Ray version, resources, token accepted")
    c.add_argument("name", metavar="NAME")
    c.set_defaults(func=_check)
    r = add_parser(csub, "remove", "forget a cluster")
    r.add_argument("name", metavar="NAME")
    r.set_defaults(func=_remove)


def _add(args) -> int:
    from core import clusters
    from core.errors import ConfigError

    db, _ = open_db(args)
    try:
        row = clusters.add(db, args.name, args.address, args.token_env, args.shared_dir)
    except ConfigError as exc:
        raise CliError(str(exc)) from exc
    emit(args, {k: row[k] for k in ("name", "address", "token_env", "shared_dir")},
         f"cluster {row['name']} added ({row['address']}); `pocketops cluster check {row['name']}` contacts it")
    return 0


def _list(args) -> int:
    from core import clusters

    db, _ = open_db(args)
    found = clusters.list_with_status(db)
    if args.json:
        emit(args, [{k: c[k] for k in ("name", "address", "reachable", "ray_version")} for c in found])
        return 0
    if not found:
        print("no clusters; add one with `pocketops cluster add NAME --address http://HEAD:8265`")
    for c in found:
        state = f"Ray {c['ray_version']}" if c["reachable"] else f"unreachable: {c.get('error', '')}"
        print(f"{c['name']:<12} {c['address']:<28} {state}")
    return 0


def _check(args) -> int:
    from core import clusters
    from core.errors import PocketopsError

    db, _ = open_db(args)
    try:
        info = clusters.check(db, args.name)
    except PocketopsError as exc:
        raise CliError(str(exc)) from exc
    res = info["resources"]
    bits = ", ".join(f"{k} {v:g}" if k in ("CPU", "GPU") else f"{k} {v / 2**30:.1f} GiB" for k, v in res.items())
    emit(args, info, f"cluster {info['name']}: reachable, Ray {info['ray_version']}, auth {info['auth']}"
         + (f" (token from {info['token_from']})" if info["token_from"] else "") + (f"; {bits}" if bits else ""))
    return 0


def _remove(args) -> int:
    from core import clusters
    from core.errors import ConfigError

    db, _ = open_db(args)
    try:
        clusters.remove(db, args.name)
    except ConfigError as exc:
        raise CliError(str(exc)) from exc
    emit(args, {"name": args.name, "removed": True}, f"cluster {args.name} removed")
    return 0
