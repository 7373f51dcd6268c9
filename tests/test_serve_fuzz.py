"""Fuzz the served API of a real bundle server on 127.0.0.1 with hypothesis (fixed seed, bounded budget).

Every route (/health, /v1/model, /v1/stats, /v1/predict, unknown paths and methods) gets
generated requests over a raw socket: random bytes, truncated JSON, deep nesting, huge numbers,
NaN/Infinity, wrong types and shapes, wrong content types, missing/duplicate/contradicting
Content-Length headers, garbage request lines, slow bodies. The server must never answer 5xx
nor reset a connection, a valid request in between must still get the right answer, and
/v1/stats must count exactly what was sent (responses by status; prediction requests and errors).

Budget: ``POCKETOPS_FUZZ_EXAMPLES`` examples per test (default 250 in ``make test``: 10 hypothesis
tests, about 3,000 requests with the probes; 21 s for the file on the shared 2-core machine at load
~9). ``POCKETOPS_FUZZ_FULL=1`` (``make bench``): 10,000 per test, i.e. per route and per attack on
/v1/predict (~50,000 requests, ~9 min there). Each example must finish within hypothesis's 20 s
deadline; every socket read has a 30 s timeout, so a hang fails instead of blocking.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections import Counter
from datetime import timedelta

import numpy as np
import pytest

pytest.importorskip("hypothesis", reason="hypothesis (a dev tool) is not installed: `make test` installs it")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests._serve_helpers import (HOST, Response, http_request, raw_exchange, raw_exchange_all, read_response,
                                  running_server)
from tests.standins.bundles import LABELS, make_bundle, reference_predict

FULL = os.environ.get("POCKETOPS_FUZZ_FULL") == "1"
EXAMPLES = 10_000 if FULL else int(os.environ.get("POCKETOPS_FUZZ_EXAMPLES", "250"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=timedelta(seconds=20),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], print_blob=True)
MAX_BODY = 64 * 1024  # a small limit so oversized bodies are cheap to generate


class Served:
    """The server under fuzz and every status it answered, as the client saw them."""

    def __init__(self, srv, bundle):
        self.srv, self.port, self.bundle = srv, srv.port, bundle
        self.seen: Counter = Counter()        # status -> count, every response read
        self.predict_ok = 0                   # 200s of POST /v1/predict
        self.examples = 0
        self.lock = threading.Lock()
        self.x = np.random.default_rng(1).normal(5, 2, size=(3, 4))
        self.labels = [LABELS[i] for i in reference_predict(bundle, self.x).argmax(axis=1)]

    def send(self, data: bytes, *, predict: bool = False, shut_write: bool = True, timeout: float = 30.0) -> Response:
        """One raw exchange; a reset or a hang is a failure, a 5xx is a failure, and it is counted.
        Bytes past the first request (a short Content-Length, pipelined garbage) are requests too:
        every answer up to the server's close is read and counted."""
        answers = raw_exchange_all(self.port, data, timeout=timeout, shut_write=shut_write)
        for i, answer in enumerate(answers):
            self.record(answer, predict=predict and i == 0)
        return answers[0]

    def record(self, answer: Response, *, predict: bool = False) -> None:
        assert answer.error in (None, "eof"), f"connection {answer.error}: {answer}"
        if answer.status is not None:
            assert answer.status < 500, answer
            with self.lock:
                self.seen[answer.status] += 1
                self.predict_ok += int(predict and answer.status == 200)

    def probe(self) -> None:
        """Every 10th example: a valid prediction still gets the right labels."""
        self.examples += 1
        if self.examples % 10:
            return
        answer = self.send(http_request("POST", "/v1/predict", json.dumps({"inputs": self.x.tolist()}).encode()),
                           predict=True)
        assert answer.status == 200 and answer.json()["labels"] == self.labels, answer

    def check_stats(self) -> None:
        """/v1/stats counts exactly the answers this client read (its own answer not included)."""
        answer = raw_exchange(self.port, http_request("GET", "/v1/stats"), shut_write=True)
        assert answer.status == 200, answer
        stats = answer.json()
        with self.lock:
            seen = {str(k): v for k, v in sorted(self.seen.items())}
            errors = sum(v for k, v in self.seen.items() if k >= 400)
            predict_ok = self.predict_ok
        assert stats["http"]["by_status"] == seen
        assert stats["http"]["responses"] == sum(seen.values())
        assert stats["errors"] == errors and stats["requests"] == predict_ok + errors
        self.record(answer)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    bundle = make_bundle(tmp_path_factory.mktemp("fuzz") / "bundle", seed=9)
    with running_server(bundle.path, "--max-body", str(MAX_BODY), "--timeout", "5", "--request-timeout", "10") as srv:
        s = Served(srv, bundle)
        yield s
        assert srv.proc.poll() is None, "the server died: " + srv.log_text()[-2000:]
        assert "Traceback" not in srv.log_text() and "failed:" not in srv.log_text(), srv.log_text()[-3000:]


# -- strategies -----------------------------------------------------------------------------------

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.integers(min_value=-(10 ** 400), max_value=10 ** 400),
    st.sampled_from([0, 1, -1, 1e308, -1e308, 5e-324, 2 ** 63, -(2 ** 63), 2 ** 64, 1e6, 1e6 + 1]),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=40,
)
shapes = st.lists(st.integers(min_value=0, max_value=6), min_size=0, max_size=4)


@st.composite
def shaped_inputs(draw):
    """Numbers in nested lists of a random shape (sometimes the right one)."""
    shape = draw(st.one_of(shapes, st.sampled_from([[4], [1, 4], [3, 4], [65, 4], [2, 2], [4, 1]])))
    size = int(np.prod(shape)) if shape else 1
    values = draw(st.lists(st.floats(-20, 20, allow_nan=False), min_size=size, max_size=size)) if size <= 300 else [1.0] * size
    return np.asarray(values, dtype=np.float64).reshape(shape).tolist()


def _json(value) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def _big_int(digits: int) -> bytes:
    return b"9" * digits


@st.composite
def predict_bodies(draw):
    """Bodies for POST /v1/predict, most of them wrong in one way."""
    kind = draw(st.sampled_from(["bytes", "truncated", "nested", "value", "shape", "huge", "literal", "valid", "text"]))
    if kind == "bytes":
        return draw(st.binary(max_size=512))
    if kind == "truncated":
        body = _json({"inputs": draw(shaped_inputs())})
        return body[: draw(st.integers(0, max(len(body) - 1, 0)))]
    if kind == "nested":
        depth = draw(st.integers(1, 50_000))
        inner = b"[" * depth + b"1" + b"]" * depth
        return b'{"inputs": ' + inner + b"}" if draw(st.booleans()) else inner
    if kind == "value":
        return _json({"inputs": draw(json_values)} if draw(st.booleans()) else draw(json_values))
    if kind == "shape":
        return _json({"inputs": draw(shaped_inputs())})
    if kind == "huge":
        digits = draw(st.integers(300, 6000))
        return b'{"inputs": [[' + _big_int(digits) + b", 1, 2, 3]]}"
    if kind == "literal":
        lit = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"1e-999", b"null", b"true"]))
        return b'{"inputs": [[' + lit + b", 1, 2, 3]]}"
    if kind == "text":
        return _json({"inputs": draw(st.text(max_size=50))})
    return _json({"inputs": draw(shaped_inputs()), **draw(st.dictionaries(st.text(max_size=5), json_values, max_size=2))})


content_types = st.sampled_from([None, "application/json", "text/plain", "application/x-www-form-urlencoded",
                                 "multipart/form-data; boundary=x", "application/json; charset=latin-1", "", "\x7f"])


def _expected_predict_status(body: bytes) -> set[int]:
    """What POST /v1/predict may answer for ``body`` (the exact code where it is certain)."""
    if len(body) > MAX_BODY:
        return {413}
    if body.count(b"[") + body.count(b"{") > 500:
        # Deep nesting: refused as JSON (400) where the server's parser hits Python's recursion
        # limit, else refused as a shape (422); where exactly depends on the stack, not the body.
        return {400, 422}
    try:
        value = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        return {400}
    if not isinstance(value, dict) or "inputs" not in value:
        return {400}
    return {200, 422}


# -- the routes -----------------------------------------------------------------------------------

@FUZZ
@given(body=predict_bodies(), content_type=content_types)
def test_predict_never_fails_on_any_body(served, body, content_type):
    headers = {"Content-Length": str(len(body))}
    if content_type is not None:
        headers["Content-Type"] = content_type
    answer = served.send(http_request("POST", "/v1/predict", body, headers), predict=True)
    assert answer.status in _expected_predict_status(body), (body[:200], answer)
    if answer.status == 200:
        got = answer.json()
        x = np.asarray(json.loads(body)["inputs"], dtype=np.float64).reshape(-1, 4)
        assert got["labels"] == [LABELS[i] for i in reference_predict(served.bundle, x).argmax(axis=1)]
    else:
        assert answer.json()["status"] == answer.status and answer.json()["error"]
    served.probe()


length_headers = st.one_of(
    st.just([]),                                                     # missing
    st.lists(st.sampled_from(["{n}", "{n}", "-1", "-{n}", "+{n}", " {n} ", "{n}_0", "0x10", "1e3", "",
                              "99999999999999999999999", "{m}", "{k}", "abc", "\u0665"]),
             min_size=1, max_size=3),                                # one, duplicates, contradictions
)


@FUZZ
@given(lengths=length_headers, chunked=st.booleans(), body=predict_bodies(), expect=st.booleans())
def test_predict_content_length_missing_duplicate_or_wrong(served, lengths, chunked, body, expect):
    n = len(body)
    values = [v.format(n=n, m=max(n - 3, 0), k=n + 7) for v in lengths]
    lines = ["POST /v1/predict HTTP/1.1", f"Host: {HOST}", "Content-Type: application/json"]
    lines += [f"Content-Length: {v}" for v in values]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    if expect:
        lines.append("Expect: 100-continue")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body
    answer = served.send(data, predict=True)  # after a "100 Continue" where Expect asked for one
    distinct = {v.strip() for v in values}
    if chunked or not values:
        assert answer.status == 411, answer
    elif len(distinct) > 1:
        assert answer.status == 400 and "conflicting" in answer.json()["error"], answer
    elif not (values[0].strip().isascii() and values[0].strip().isdigit()) or len(values[0].strip()) > 18:
        assert answer.status == 400 and "Content-Length" in answer.json()["error"], answer
    elif int(values[0]) > MAX_BODY:
        assert answer.status == 413, answer
    elif int(values[0]) > n:  # we half-closed: the body ends early
        assert answer.status == 400 and "body ended" in answer.json()["error"], answer
    else:
        assert answer.status in _expected_predict_status(body[: int(values[0])]), answer
    served.probe()


ROUTES = {"/health": 200, "/": 200, "/v1/model": 200, "/v1/stats": 200, "/v1/predict": 405}
methods = st.one_of(st.sampled_from(["GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE",
                                     "CONNECT", "get", "PROPFIND"]),
                    st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12))
url_text = st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="#?"), max_size=40)
queries = st.one_of(st.just(""), st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="#"),
                                         max_size=20).map(lambda q: "?" + q))
header_names = st.sampled_from(["X-API-Key", "Accept", "Connection", "Content-Type", "Host", "Cookie", "X-Junk",
                                "Content-Length"])
header_lists = st.lists(st.tuples(header_names, st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30)),
                        max_size=6)


@pytest.mark.parametrize("route", ["/health", "/v1/model", "/v1/stats", "/v1/predict", "unknown"])
@FUZZ
@given(method=methods, tail=url_text, query=queries, headers=header_lists)
def test_every_route_and_method_answers_4xx_or_its_document(served, route, method, tail, query, headers):
    """Each route (and unknown paths) with any method, query string and headers: its document, 405, 404 or 400."""
    path = ("/" + tail if "/" + tail not in ROUTES else "/nope/" + tail) if route == "unknown" else route
    headers = [(k, v) for k, v in headers if not (k == "Content-Length" and method == "POST")]  # covered above
    lines = [f"{method} {path}{query} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers]
    answer = served.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), predict=(method == "POST"))
    if path.startswith("//"):  # the stdlib folds a leading '//' into '/'
        path = "/" + path.lstrip("/")
    if method == "GET" and path in ROUTES:
        assert answer.status == ROUTES[path], answer
        if answer.status == 200:
            assert answer.json()
    elif method == "POST" and path == "/v1/predict":
        assert answer.status == 411, answer   # no body and no Content-Length
    elif path in ROUTES:  # a method the route does not take (POST /health too: 405 like the Cloud Run function, #13)
        assert answer.status in (405, 400), answer
    elif method == "GET" or method == "POST":
        assert answer.status == 404, answer
    else:
        assert answer.status in (405, 400), answer
    served.probe()


@FUZZ
@given(data=st.one_of(
    st.binary(max_size=300),
    st.builds(lambda m, junk: m + b" " + junk, st.sampled_from([b"GET", b"POST", b"PUT"]), st.binary(max_size=200)),
    st.builds(lambda line, rest: line + b"\r\n" + rest,
              st.sampled_from([b"GET /health HTTP/1.1", b"POST /v1/predict HTTP/1.1", b"GET /health",
                               b"GET /health HTTP/2.0", b"GET /health HTTP/1.x", b"GET /health HTTP/1.1 extra",
                               b"GET  HTTP/1.1", b"GET /" + b"a" * 70_000 + b" HTTP/1.1"]),
              st.binary(max_size=300)),
    st.builds(lambda n: b"GET /health HTTP/1.1\r\n" + b"X-Many: 1\r\n" * n + b"\r\n", st.integers(90, 120)),
    st.builds(lambda n: b"GET /health HTTP/1.1\r\nX-Long: " + b"a" * n + b"\r\n\r\n", st.sampled_from([65_000, 70_000])),
))
def test_malformed_http_gets_an_answer_or_a_clean_close(served, data):
    """Garbage request lines, HTTP/2 on plain text, header floods: 4xx or a clean close, never a reset or 5xx."""
    answer = served.send(data)
    if answer.status is not None:
        assert answer.status in (200, 400, 404, 405, 408, 411, 413, 414, 422, 431), answer
    served.probe()


@settings(max_examples=60 if FULL else 6, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(pauses=st.lists(st.floats(0.0, 0.4), min_size=1, max_size=8), valid=st.booleans())
def test_slow_bodies_are_answered_or_timed_out_with_408(served, pauses, valid):
    """A body sent in pieces with pauses: 200/4xx while it fits the 10 s request deadline; meanwhile others are served."""
    body = json.dumps({"inputs": served.x.tolist()}).encode() if valid else b'{"inputs": [[1, 2, 3, "x"]]}'
    head = http_request("POST", "/v1/predict", body)[: -len(body)]
    pieces = np.array_split(np.frombuffer(body, dtype=np.uint8), len(pauses))
    with socket.create_connection((HOST, served.port), timeout=30) as sock:
        sock.sendall(head)
        for pause, piece in zip(pauses, pieces):
            time.sleep(pause)  # the client's own pacing, not a wait on the server
            sock.sendall(piece.tobytes())
            served.probe()
        answer = read_response(sock)
    served.record(answer, predict=True)
    assert answer.status == (200 if valid else 422), answer


def test_stats_count_every_answer_by_status(served):
    """Runs last in this file: the server's counts equal what the fuzzing client read."""
    served.check_stats()
    assert served.srv.proc.poll() is None


# -- the predictor alone: a text model's token ids -----------------------------------------------------

@pytest.fixture(scope="module")
def text_predictor(tmp_path_factory):
    """A bag-of-bytes text bundle (int64 token ids in, Gather + ReduceSum, 2 logits out)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from deployers.runtime.predictor import TEXT_VOCAB, Predictor

    root = tmp_path_factory.mktemp("text-bundle")
    emb = np.random.default_rng(0).normal(size=(TEXT_VOCAB, 2)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["E", "input"], ["votes"]),
         helper.make_node("ReduceSum", ["votes", "axes"], ["logits"], keepdims=0)], "text",
        [helper.make_tensor_value_info("input", TensorProto.INT64, ["batch", 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(emb, "E"), numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(root / "model.onnx"))
    (root / "model.json").write_text(json.dumps({
        "version": "t1", "labels": ["neg", "pos"], "model_file": "model.onnx",
        "input": {"shape": [16], "dtype": "int64", "kind": "text"}, "preprocessing": {"max_len": 16}}))
    return Predictor(root)


@FUZZ
@given(ids=st.lists(st.one_of(st.integers(-(2 ** 70), 2 ** 70), st.floats(allow_nan=False, allow_infinity=False)),
                    min_size=16, max_size=16),
       text=st.text(max_size=40))
def test_text_model_takes_any_text_and_refuses_token_ids_it_has_no_embedding_for(text_predictor, ids, text):
    """An id outside 0..257 used to reach onnxruntime's Gather and fail with a 500; now it is an InputError (422)."""
    from deployers.runtime.predictor import TEXT_VOCAB, InputError

    assert text_predictor.predict([text])["labels"][0] in ("neg", "pos")
    valid = all(float(i).is_integer() and 0 <= i < TEXT_VOCAB for i in ids)
    if valid:
        assert len(text_predictor.predict([ids])["labels"]) == 1
    else:
        with pytest.raises(InputError):
            text_predictor.predict([ids])
