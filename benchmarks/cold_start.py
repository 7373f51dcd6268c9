"""Cold start: process start to first successful prediction, bundle server vs a torch server.

    python benchmarks/cold_start.py [--repeats 7] [--short]

Both serve the same digits model (a softmax regression trained here on the built-in digits,
~0.3 s): the bundle's ``server.py`` (numpy + onnxruntime, started exactly as ``pocketops
deploy --target local`` starts it, with its supervisor) and a minimal stdlib HTTP server that
imports torch and loads the same weights from a ``torch.save`` checkpoint. Runs alternate
(ORT, torch, ORT, ...) so both see the same machine state; one thread each. Prints both
medians and, last, ``ratio: X`` (torch / bundle). Target: >= 5.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TORCH_SERVER = r'''
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import torch
torch.set_num_threads(1)
model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
model.load_state_dict(torch.load(sys.argv[1], weights_only=True))
model.eval()

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with torch.no_grad():
            x = torch.tensor(body["inputs"], dtype=torch.float32) / 16.0
            probs = torch.softmax(model(x), dim=1)
        out = json.dumps({"probabilities": probs.tolist()}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(out))); self.end_headers()
        self.wfile.write(out)

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Handler).serve_forever()
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def first_prediction(cmd: list[str], port: int, sample: list, timeout: float = 60.0) -> float:
    """Seconds from Popen to the first 200 answer of POST /v1/predict; the process is then stopped."""
    body = json.dumps({"inputs": sample})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True)
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"{cmd[1]} exited with {proc.returncode}: {proc.stderr.read().decode()[-500:]}")
            if time.perf_counter() - started > timeout:
                raise SystemExit(f"{cmd[1]} did not answer within {timeout} s")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("POST", "/v1/predict", body=body, headers={"Content-Type": "application/json"})
                if conn.getresponse().status == 200:
                    return time.perf_counter() - started
            except OSError:
                time.sleep(0.005)
            finally:
                conn.close()
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=10)


def setup(tmp: Path) -> tuple[Path, Path, list]:
    """A bundle and a torch checkpoint of the same trained weights; one raw digit."""
    import numpy as np

    import store
    from deployers.bundle import build_bundle
    from tests._deploy_helpers import digits_samples, digits_weights, make_variant

    db_path = tmp / "bench.db"
    db = store.connect(db_path)
    bundle = build_bundle(db, db_path, make_variant(db, db_path))
    W, b = digits_weights()
    ckpt = tmp / "digits.pt"
    code = ("import sys, numpy as np, torch; d = np.load(sys.argv[1]); "
            "torch.save({'1.weight': torch.from_numpy(d['W'].T.copy()), '1.bias': torch.from_numpy(d['b'])}, sys.argv[2])")
    np.savez(tmp / "w.npz", W=W, b=b)
    subprocess.run([sys.executable, "-c", code, str(tmp / "w.npz"), str(ckpt)], check=True)
    (tmp / "torch_server.py").write_text(TORCH_SERVER)
    return bundle.path, ckpt, digits_samples(1).tolist()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--short", action="store_true", help="3 repeats (for make bench-check)")
    args = parser.parse_args(argv)
    if args.short:
        args.repeats = 3
    with tempfile.TemporaryDirectory(prefix="pocketops-cold-") as tmp_name:
        tmp = Path(tmp_name)
        bundle, ckpt, sample = setup(tmp)
        ort_times, torch_times = [], []
        for i in range(args.repeats):
            port = free_port()
            ort_cmd = [sys.executable, str(bundle / "server.py"), "--bundle", str(bundle), "--port", str(port),
                       "--threads", "1", "--supervise"]
            ort_times.append(first_prediction(ort_cmd, port, sample))
            port = free_port()
            torch_times.append(first_prediction([sys.executable, str(tmp / "torch_server.py"), str(ckpt), str(port)],
                                                port, sample))
            print(f"repeat {i + 1}: bundle server {ort_times[-1] * 1000:.0f} ms, torch server {torch_times[-1] * 1000:.0f} ms",
                  flush=True)
    ort_ms, torch_ms = statistics.median(ort_times) * 1000, statistics.median(torch_times) * 1000
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}, 1 thread each, {args.repeats} alternating repeats")
    print(f"bundle server (numpy + onnxruntime), start to first prediction: median {ort_ms:.0f} ms")
    print(f"torch server (import torch + load checkpoint), start to first prediction: median {torch_ms:.0f} ms")
    print(f"ratio: {torch_ms / ort_ms:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
