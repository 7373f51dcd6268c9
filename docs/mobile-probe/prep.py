# main venv: test split + torch logits + onnx/ort files and their numbers
import time, numpy as np, torch, store, statistics, onnxruntime as ort
from pathlib import Path
from core.export_job import eval_data
from core.trainer import load_checkpoint
from core import export, quantize
db = store.connect("/tmp/mobprobe/home/pocketops.db")
d = eval_data(db, "digits")
model, ckpt = load_checkpoint("/tmp/mobprobe/home/pocketops-files/runs/1/best.pt")
with torch.no_grad(): ref = model(torch.from_numpy(d.X_test)).numpy()
np.savez("/tmp/mobprobe/out/data.npz", X=d.X_test, y=d.y_test, ref=ref, X_train=d.X_train[:256])
print("shape", d.X_test.shape, d.X_test.dtype, "torch acc", (ref.argmax(1) == d.y_test).mean())
out = Path("/tmp/mobprobe/out")
export.export_onnx(model, d.X_test.shape[1:], out / "fp32.onnx")
quantize.build("ort-format", out / "fp32.onnx", out / "model.ort")
def p50(fn, x, n=2000):
    for _ in range(200): fn(x)
    ts = []
    for i in range(n):
        t = time.perf_counter_ns(); fn(x[i % len(x):i % len(x) + 1]); ts.append(time.perf_counter_ns() - t)
    return statistics.median(ts) / 1e6
torch.set_num_threads(1)
with torch.no_grad():
    print(f"torch eager  p50 {p50(lambda a: model(torch.from_numpy(a)), d.X_test):.4f} ms")
for f in ("fp32.onnx", "model.ort"):
    so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
    t = time.perf_counter(); s = ort.InferenceSession(str(out / f), so, providers=["CPUExecutionProvider"]); load = (time.perf_counter() - t) * 1e3
    name = s.get_inputs()[0].name
    got = s.run(None, {name: d.X_test})[0]
    print(f"ort {f:10s} size {(out/f).stat().st_size} load {load:.1f} ms p50 {p50(lambda a: s.run(None, {name: a}), d.X_test):.4f} ms max|dlogit| {np.abs(got-ref).max():.2e} acc {(got.argmax(1)==d.y_test).mean():.4f}")
