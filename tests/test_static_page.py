"""The static page in headless Chromium: its prediction equals Python onnxruntime; taps paint cells.

Needs Debian's ``chromium`` and onnxruntime-web (``make browser-deps``). Under CI=true both are
mandatory (the test fails without them); elsewhere it is skipped with the reason.
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import urllib.parse
from pathlib import Path

import numpy as np
import pytest

import store
from deployers.bundle import build_bundle
from deployers.runtime.predictor import Predictor
from deployers.static import ORT_FILES, build_static_site
from tests._deploy_helpers import digits_samples, make_tabular_variant, make_text_variant, make_variant

ROOT = Path(__file__).resolve().parent.parent
ORT_DIR = Path(os.environ.get("POCKETOPS_ORT_DIR", ROOT / "build" / "web" / "node_modules" / "onnxruntime-web" / "dist"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=15000", "--dump-dom"]


def _require_browser() -> None:
    missing = []
    if not CHROMIUM:
        missing.append("chromium (apt-get install -y chromium)")
    if not all((ORT_DIR / f).is_file() for f in ORT_FILES):
        missing.append(f"onnxruntime-web in {ORT_DIR} (npm install onnxruntime-web@1.30.0, see `make browser-deps`)")
    if missing:
        message = "static page test needs " + " and ".join(missing)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " — mandatory under CI=true")
        pytest.skip(message)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bundle")
    db = store.connect(tmp / "t.db")
    return build_bundle(db, tmp / "t.db", make_variant(db, tmp / "t.db"))


def _serve(tmp_path_factory, bundle):
    _require_browser()
    tmp = tmp_path_factory.mktemp("static")
    files = build_static_site(bundle, tmp / "site", vendor_ort=ORT_DIR)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(tmp / "site")))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield {"url": f"http://127.0.0.1:{httpd.server_address[1]}/index.html", "bundle": bundle, "files": files, "tmp": tmp}
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def site(tmp_path_factory, bundle):
    yield from _serve(tmp_path_factory, bundle)


@pytest.fixture(scope="module")
def tabular_site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tabular")
    db = store.connect(tmp / "t.db")
    yield from _serve(tmp_path_factory, build_bundle(db, tmp / "t.db", make_tabular_variant(db, tmp / "t.db")))


@pytest.fixture(scope="module")
def text_site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("text")
    db = store.connect(tmp / "t.db")
    yield from _serve(tmp_path_factory, build_bundle(db, tmp / "t.db", make_text_variant(db, tmp / "t.db")))


def _run_page(site, query: dict, *, dom: bool = False):
    url = site["url"] + "?" + urllib.parse.urlencode({k: json.dumps(v) for k, v in query.items()})
    profile = site["tmp"] / f"profile-{len(list(site['tmp'].glob('profile-*')))}"
    profile.mkdir()
    out = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", url],
                         capture_output=True, text=True, timeout=120)
    status = re.search(r'<body[^>]*data-status="(\w+)"', out.stdout)
    result = re.search(r'<pre id="result">(.*?)</pre>', out.stdout, re.S)
    assert status and result, f"no page output; chromium exit {out.returncode}: {out.stderr[-500:]}"
    return (status.group(1), result.group(1), out.stdout) if dom else (status.group(1), result.group(1))


def test_page_prediction_equals_python(site):
    names = [f["path"] for f in site["files"]]
    assert names == ["app.js", "index.html", "model.json", "model.onnx", *(f"ort/{n}" for n in sorted(ORT_FILES))]
    predictor = Predictor(site["bundle"].path)
    for start in (7, 42):
        sample = digits_samples(1, start=start)[0].tolist()
        status, result = _run_page(site, {"sample": sample})
        assert status == "done", result
        expected = predictor.predict(sample)["probabilities"][0]
        np.testing.assert_allclose(json.loads(result), expected, atol=5e-5)  # equal to 4 decimals
        assert int(np.argmax(json.loads(result))) == int(np.argmax(expected))


def test_taps_paint_and_erase_cells(site):
    status, result = _run_page(site, {"taps": [[0, 0], [1, 1], [7, 7], [1, 1]]})
    assert status == "done", result
    page = json.loads(result)
    cells = np.array(page["cells"]).reshape(8, 8)
    assert cells[0, 0] == 16 and cells[7, 7] == 16 and cells[1, 1] == 0 and cells.sum() == 32
    expected = Predictor(site["bundle"].path).predict(cells[None].tolist())["probabilities"][0]
    np.testing.assert_allclose(page["probabilities"], expected, atol=5e-5)


def test_cdn_page_and_bad_vendor_dir(tmp_path, bundle):
    """Runs without a browser: the default page loads onnxruntime-web from its CDN."""
    from deployers.base import DeployError

    files = build_static_site(bundle, tmp_path / "cdn")
    page = (tmp_path / "cdn" / "index.html").read_text()
    assert "cdn.jsdelivr.net/npm/onnxruntime-web@1.30.0/dist/ort.wasm.min.js" in page
    assert [f["path"] for f in files] == ["app.js", "index.html", "model.json", "model.onnx"]
    with pytest.raises(DeployError, match="missing ort.wasm.min.js"):
        build_static_site(bundle, tmp_path / "bad", vendor_ort=tmp_path)


def test_tabular_page_has_a_field_per_feature_and_predicts_like_python(tabular_site):
    """A visitor fills the four fields and taps Predict: the page shows Python's top class."""
    status, result, dom = _run_page(tabular_site, {"fill": [5.9, 2.8, 4.3, 1.3]}, dom=True)
    assert status == "done", result
    assert re.findall(r"<label>(\w+)<input", dom) == ["sepal_len", "sepal_wid", "petal_len", "petal_wid"]
    assert "<textarea" not in dom and "<canvas" not in dom
    page = json.loads(result)
    expected = Predictor(tabular_site["bundle"].path).predict([5.9, 2.8, 4.3, 1.3])
    np.testing.assert_allclose(page["probabilities"], expected["probabilities"][0], atol=5e-5)
    top = expected["top"][0][0]
    assert page["shown"][0] == [top["label"], "", f"{100 * top['probability']:.1f}%"] and top["label"] == "versicolor"
    assert page["status"] == "Top class: versicolor"


@pytest.mark.parametrize("text, label", [("happy nice", "pos"), ("sad, bad and awful", "neg")])
def test_text_page_has_a_textarea_and_predicts_like_python(text_site, text, label):
    """A visitor types a text and taps Predict: the same tokens and probabilities as the Python predictor."""
    status, result, dom = _run_page(text_site, {"fill": text}, dom=True)
    assert status == "done", result
    assert "<textarea" in dom and "<canvas" not in dom and "<input" not in dom
    page = json.loads(result)
    expected = Predictor(text_site["bundle"].path).predict([text])
    np.testing.assert_allclose(page["probabilities"], expected["probabilities"][0], atol=5e-5)
    assert expected["labels"] == [label] and page["shown"][0][0] == label
