"""A loopback stand-in for a served bundle's ``GET /v1/monitor`` (and ``/health``), scriptable by tests.

It speaks the contract the real server implements: ``since`` (int ≥ 0, default 0) and ``limit``
(1..5000, default 1000), else 400 ``{"error"}``; 200 with ``server_id``, ``seq``, ``first_seq``,
``signals``, ``events``, ``quarantine``, ``detectors``, ``calibration``. Tests append requests
with :meth:`MonitorStandIn.serve` and alarms with :meth:`alarm`, and break it with ``garbage``
(answers non-JSON), ``fail["monitor"] = 503`` or ``restart()`` (a new server_id, seq from 1).
"""
from __future__ import annotations

import uuid

from tests.standins import JsonHandler, StandIn

RING = 5000


class MonitorStandIn(StandIn):
    """The served side's monitor ring, in memory."""

    def __init__(self) -> None:
        self.handler_class = _Handler
        super().__init__()
        self.restart()
        self.garbage: bytes | None = None

    def restart(self) -> None:
        """A new server process: a new server_id, an empty ring, seq from 1."""
        with self.lock:
            self.server_id = uuid.uuid4().hex[:12]
            self.seq = 0
            self.signals: list[dict] = []
            self.events: list[dict] = []
            self.quarantine: list[dict] = []

    def serve(self, n: int, *, confidence: float = 0.95, distance: float = 1.0, pred: int = 0,
              inputs=None) -> list[int]:
        """``n`` served requests; their seqs."""
        seqs = []
        with self.lock:
            for i in range(n):
                self.seq += 1
                self.signals.append({"seq": self.seq, "t": 1_700_000_000.0 + self.seq, "pred": pred,
                                     "confidence": confidence, "distance": distance,
                                     "_input": inputs[i % len(inputs)] if inputs else [[0.0] * 8] * 8})
                seqs.append(self.seq)
            del self.signals[:-RING]
        return seqs

    def alarm(self, detector: str = "distance", *, kind: str = "drift", value: float = 9.0, threshold: float = 5.0,
              quarantine: int = 3) -> dict:
        """An event at the last seq with the last ``quarantine`` requests quarantined."""
        with self.lock:
            seq = self.seq
            q = [s for s in self.signals[-quarantine:]] if quarantine else []
            event = {"event_id": f"{self.server_id}-{len(self.events) + 1}", "seq": seq, "t": 1_700_000_000.0 + seq,
                     "detector": detector, "kind": kind, "value": value, "threshold": threshold,
                     "message": f"{detector} above its threshold ({value:g} > {threshold:g})",
                     "quarantine": [s["seq"] for s in q]}
            self.events.append(event)
            for s in q:
                self.quarantine.append({"seq": s["seq"], "input": s["_input"], "pred": s["pred"],
                                        "confidence": s["confidence"]})
        return event

    def quarantine_after(self, event: dict, n: int) -> None:
        """The real server's after-alarm quarantine: the next ``n`` requests join ``event``'s quarantine
        and the event is sent again (same event_id) to a pull whose ``since`` is before them."""
        with self.lock:
            for s in self.signals[-n:]:
                event["quarantine"].append(s["seq"])
                self.quarantine.append({"seq": s["seq"], "input": s["_input"], "pred": s["pred"],
                                        "confidence": s["confidence"]})

    def answer(self, since: int, limit: int) -> dict:
        with self.lock:
            signals = [{k: v for k, v in s.items() if not k.startswith("_")} for s in self.signals if s["seq"] > since][:limit]
            top = signals[-1]["seq"] if len(signals) == limit else self.seq
            return {
                "server_id": self.server_id, "seq": self.seq,
                "first_seq": self.signals[0]["seq"] if self.signals else self.seq + 1,
                "signals": signals,
                "events": [e for e in self.events
                           if any(since < x <= top for x in [e["seq"], *e["quarantine"]])],
                "quarantine": [q for q in self.quarantine if since < q["seq"] <= top],
                "detectors": {"distance": {"params": {"delta": 0.005}, "threshold": 5.0, "state": {}},
                              "confidence": {"params": {"alpha": 0.01}, "threshold": 0.2, "state": {}},
                              "classes": {"params": {"window": 200}, "threshold": 12.0, "state": {}}},
                "calibration": {"ert_target": 10000, "false_alarms_per_10k": 0.4, "signal": "distance"},
            }


class _Handler(JsonHandler):
    def do_GET(self):  # noqa: N802
        path, query = self.split()
        s = self.standin
        s.requests.append(("GET", self.path))
        if path == "/health":
            if not self.failing("health"):
                self.send(200, {"status": "ok"})
            return
        if path != "/v1/monitor":
            self.send(404, {"error": f"no route GET {path}"})
            return
        if self.failing("monitor"):
            return
        if s.garbage is not None:
            self.send(200, raw=s.garbage, content_type="text/html")
            return
        try:
            since = int((query.get("since") or ["0"])[0])
            limit = int((query.get("limit") or ["1000"])[0])
        except ValueError:
            self.send(400, {"error": "since and limit must be integers"})
            return
        if since < 0 or not 1 <= limit <= 5000:
            self.send(400, {"error": "since must be ≥ 0 and limit 1..5000"})
            return
        self.send(200, s.answer(since, limit))
