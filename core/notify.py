"""Alert notifications: ``termux-notification`` on Termux, webhooks (JSON POST) and apprise URLs.

Notification URLs carry tokens, so they live only in ``$POCKETOPS_NOTIFY_URLS`` (whitespace or
comma separated) or in a 0600 file (``notify.conf``: one URL a line) in the config directory
(``$POCKETOPS_CONFIG_DIR``, else ``$POCKETOPS_HOME``, else the platform's user config dir), never in
SQLite, logs or screenshots. The store names a channel by its scheme and a short fingerprint
(:func:`target_of`); the UI shows :func:`mask`. A failed send is recorded and retried with
exponential backoff (``$POCKETOPS_NOTIFY_BACKOFF_S``, default 30 s, doubling, 5 attempts);
nothing here raises into the worker.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from core.errors import ConfigError

ENV = "POCKETOPS_NOTIFY_URLS"
FILE_NAME = "notify.conf"
TERMUX_TIMEOUT_S = 5.0   # termux-notification talks to the Termux:API app, which can hang
HTTP_TIMEOUT_S = 5.0
MAX_ATTEMPTS = 5
_SPLIT = re.compile(r"[\s,]+")


def config_dir() -> Path:
    """Where ``notify.conf`` lives."""
    for env in ("POCKETOPS_CONFIG_DIR", "POCKETOPS_HOME"):
        if os.environ.get(env):
            return Path(os.environ[env]).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("pocketops", appauthor=False))


def config_file() -> Path:
    """The 0600 file that keeps the notification URLs added with ``pocketops alerts notify add``."""
    return config_dir() / FILE_NAME


def _file_urls() -> list[str]:
    try:
        text = config_file().read_text("utf-8")
    except OSError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def env_urls() -> list[str]:
    """URLs from ``$POCKETOPS_NOTIFY_URLS``."""
    return [u for u in _SPLIT.split(os.environ.get(ENV, "")) if u]


def urls() -> list[str]:
    """Every configured notification URL: the config file's, then the environment's (no duplicates)."""
    found: list[str] = []
    for url in [*_file_urls(), *env_urls()]:
        if url not in found:
            found.append(url)
    return found


def fingerprint(url: str) -> str:
    """A short stable name for a URL that does not reveal it."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:8]


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def target_of(url: str) -> str:
    """How the store names the channel of ``url``: scheme and fingerprint, e.g. ``https#1a2b3c4d``."""
    return f"{_scheme(url) or 'url'}#{fingerprint(url)}"


def mask(url: str) -> str:
    """``url`` for display: a webhook's host only, anything else its scheme (tokens hide in both)."""
    scheme = _scheme(url)
    if scheme in ("http", "https"):
        host = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
        return f"{scheme}://{host}/*** #{fingerprint(url)}"
    return f"{scheme or '?'}://*** #{fingerprint(url)}"


def scrub(text: str, known: list[str] | None = None) -> str:
    """``text`` with every configured URL (and its host-less tail) replaced by ``***``."""
    for url in sorted(known if known is not None else urls(), key=len, reverse=True):
        text = text.replace(url, "***")
        tail = url.split("://", 1)[-1]
        for part in (tail, tail.split("/", 1)[-1]):
            if len(part) >= 6:
                text = text.replace(part, "***")
    return text


# -- config edits ---------------------------------------------------------------------------

def check_url(url: str) -> str:
    """``url`` if it can be sent to (a http(s) webhook, or a URL apprise parses); else ConfigError."""
    url = url.strip()
    scheme = _scheme(url)
    if scheme in ("http", "https"):
        host = url.split("://", 1)[1].split("/", 1)[0]
        if host:
            return url
        raise ConfigError(f"notification URL {mask(url)}: no host; expected e.g. https://example.com/hook")
    try:
        import apprise
    except ImportError:
        raise ConfigError(f"notification URL {mask(url)}: only http(s) webhooks work without apprise; "
                          "install it with `pip install 'pocketops[notify]'` for ntfy://, tgram://, mailto://…") from None
    if not apprise.Apprise().add(url):
        raise ConfigError(f"notification URL {mask(url)}: apprise cannot parse it; see "
                          "https://github.com/caronc/apprise/wiki for the URL of each service")
    return url


def _write(lines: list[str]) -> None:
    from core.atomic import write_text

    path = config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    # atomic_open's temp file is created 0600 (mkstemp) before any URL is written and keeps that
    # mode through the rename, so a token is never readable by others, not even briefly.
    write_text(path, "".join(f"{line}\n" for line in lines), what="notification settings")


def add_url(url: str) -> int:
    """Check ``url`` and append it to the config file; its 1-based number in :func:`urls`."""
    url = check_url(url)
    saved = _file_urls()
    if url not in saved:
        _write([*saved, url])
    return urls().index(url) + 1


def remove_url(number: int) -> str:
    """Remove URL ``number`` (1-based, as ``notify list`` shows) from the config file; its masked form."""
    saved, all_urls = _file_urls(), urls()
    if not 1 <= number <= len(all_urls):
        raise ConfigError(f"no notification URL number {number}; `pocketops alerts notify list` shows "
                          f"{len(all_urls)} (1..{len(all_urls)})" if all_urls else
                          f"no notification URL number {number}: none is configured")
    url = all_urls[number - 1]
    if url not in saved:
        raise ConfigError(f"notification URL {number} comes from ${ENV}; change that variable to remove it")
    _write([u for u in saved if u != url])
    return mask(url)


def listing() -> list[dict]:
    """``[{"number", "url" (masked), "source", "target"}]`` plus Termux when it is there."""
    saved = set(_file_urls())
    out = [{"number": i, "url": mask(u), "source": "file" if u in saved else "env", "target": target_of(u)}
           for i, u in enumerate(urls(), start=1)]
    return out


# -- sending -------------------------------------------------------------------------------

def termux_command() -> str | None:
    """The ``termux-notification`` executable, if this is Termux with Termux:API."""
    return shutil.which("termux-notification")


def channels() -> list[tuple[str, str]]:
    """``[(channel, target)]`` to notify now: Termux first, then every URL."""
    found = [("termux", "termux")] if termux_command() else []
    for url in urls():
        found.append(("webhook" if _scheme(url) in ("http", "https") else "apprise", target_of(url)))
    return found


def title_of(alert: dict) -> str:
    """One line naming the alert."""
    where = f"deployment {alert['deployment_id']}" if alert.get("deployment_id") is not None else "pocketops"
    return f"pocketops: {alert['kind']} alert {alert.get('alert_id') or alert.get('id')} on {where}"


def send(channel: str, target: str, alert: dict) -> None:
    """Send ``alert`` through one channel; raises ``OSError``/``ValueError`` with a reason (no URL) on failure."""
    title, body = title_of(alert), str(alert.get("message") or "")
    if channel == "termux":
        cmd = termux_command()
        if not cmd:
            raise OSError("termux-notification is not installed (pkg install termux-api)")
        try:
            done = subprocess.run([cmd, "--title", title, "--content", body, "--id", f"pocketops-alert-{alert['alert_id']}"],
                                  capture_output=True, text=True, timeout=TERMUX_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise OSError(f"termux-notification did not answer in {TERMUX_TIMEOUT_S:g} s (is Termux:API installed?)") from None
        if done.returncode != 0:
            raise OSError(f"termux-notification exited {done.returncode}: {(done.stderr or done.stdout).strip()[:200]}")
        return
    url = next((u for u in urls() if target_of(u) == target), None)
    if url is None:
        raise ValueError("this notification URL was removed from the configuration")
    if channel == "webhook":
        payload = {"title": title, "message": body, "alert": {k: alert.get(k) for k in (
            "alert_id", "kind", "deployment_id", "detector", "request_seq", "value", "threshold", "message")}}
        req = urllib.request.Request(url, data=json.dumps(payload).encode("utf-8"), method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "pocketops"})
        try:
            with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            raise OSError(f"webhook answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise OSError(f"webhook not reachable: {getattr(exc, 'reason', exc)}") from None
        return
    try:
        import apprise
    except ImportError:
        raise OSError("apprise is not installed: pip install 'pocketops[notify]'") from None
    sender = apprise.Apprise()
    if not sender.add(url):
        raise ValueError("apprise cannot parse this URL")
    if not sender.notify(title=title, body=body):
        raise OSError("apprise could not deliver it (see apprise's log for the service's answer)")


def backoff_s(attempts: int) -> float:
    """Seconds before retry number ``attempts`` + 1: the base doubling per attempt."""
    try:
        base = float(os.environ.get("POCKETOPS_NOTIFY_BACKOFF_S", "30"))
    except ValueError:
        base = 30.0
    return max(0.0, base) * 2 ** max(0, attempts - 1)


def queue_for(db, alert_id: int) -> int:
    """Queue an alert for every channel configured now; how many were queued."""
    from store import alerts as store_alerts

    return sum(store_alerts.queue_notification(db, alert_id, channel, target) for channel, target in channels())


def deliver_due(db, *, at: float | None = None) -> dict:
    """Try every due notification once; ``{"sent", "failed", "retrying"}``. Never raises for a send."""
    from store import alerts as store_alerts
    from store.db import now

    known = urls()
    result = {"sent": 0, "failed": 0, "retrying": 0}
    for row in store_alerts.due_notifications(db, at):
        alert = {**row, "alert_id": row["alert_id"]}
        try:
            send(row["channel"], row["target"], alert)
        except (OSError, ValueError) as exc:
            attempts = row["attempts"] + 1
            retry = attempts < MAX_ATTEMPTS and not isinstance(exc, ValueError)
            store_alerts.record_attempt(db, row["id"], ok=False, error=scrub(str(exc), known)[:300],
                                        next_at=(at or now()) + backoff_s(attempts) if retry else None)
            result["retrying" if retry else "failed"] += 1
        else:
            store_alerts.record_attempt(db, row["id"], ok=True)
            result["sent"] += 1
    return result
