import time, statistics, numpy as np, torch
from pathlib import Path
from core.trainer import load_checkpoint
out = Path("/tmp/mobprobe/out"); d = np.load(out / "data.npz")
X, y, ref = d["X"], d["y"], d["ref"]
model, _ = load_checkpoint("/tmp/mobprobe/home/pocketops-files/runs/1/best.pt")
torch.set_num_threads(1)
import litert_torch
from ai_edge_litert.interpreter import Interpreter
print("litert_torch", litert_torch.version.__version__ if hasattr(litert_torch.version, "__version__") else litert_torch.version, "torch", torch.__version__)
ex = (torch.from_numpy(X[:1]),)
variants = {}
t = time.perf_counter()
litert_torch.convert(model, ex).export(str(out / "fp32.tflite")); variants["litert-fp32"] = out / "fp32.tflite"
print(f"export fp32 {time.perf_counter()-t:.1f} s")
try:
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    t = time.perf_counter()
    q = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    gm = torch.export.export(model, ex).module()
    gm = prepare_pt2e(gm, q)
    for i in range(256): gm(torch.from_numpy(d["X_train"][i:i+1]))
    gm = convert_pt2e(gm, fold_quantize=False)
    litert_torch.convert(gm, ex, quant_config=QuantConfig(pt2e_quantizer=q)).export(str(out / "int8.tflite"))
    variants["litert-int8"] = out / "int8.tflite"
    print(f"export int8 {time.perf_counter()-t:.1f} s")
except Exception as e:
    import traceback; traceback.print_exc(limit=4); print("INT8 FAILED:", type(e).__name__, str(e)[:300])
def p50(fn, n=2000):
    for i in range(200): fn(X[i % len(X):i % len(X) + 1])
    ts = []
    for i in range(n):
        a = X[i % len(X):i % len(X) + 1]; t = time.perf_counter_ns(); fn(a); ts.append(time.perf_counter_ns() - t)
    return statistics.median(ts) / 1e6
for name, path in variants.items():
    t = time.perf_counter(); it = Interpreter(model_path=str(path), num_threads=1); it.allocate_tensors(); load = (time.perf_counter() - t) * 1e3
    i_in, i_out = it.get_input_details()[0], it.get_output_details()[0]
    print(name, "input", i_in["shape"], i_in["dtype"], "output", i_out["dtype"])
    (si, zi), (so, zo) = i_in["quantization"], i_out["quantization"]
    print(name, "io quantization", i_in["quantization"], i_out["quantization"])
    def run(a):
        if i_in["dtype"] != np.float32: a = np.clip(np.round(a / si + zi), -128, 127).astype(i_in["dtype"])
        it.set_tensor(i_in["index"], a); it.invoke(); o = it.get_tensor(i_out["index"])
        return o if i_out["dtype"] == np.float32 else (o.astype(np.float32) - zo) * so
    got = np.concatenate([run(X[i:i+1]).copy() for i in range(len(X))])
    lat = p50(run)
    print(f"{name:16s} size {path.stat().st_size} load {load:.1f} ms p50 {lat:.4f} ms max|dlogit| {np.abs(got-ref).max():.2e} "
          f"acc {(got.argmax(1)==y).mean():.4f} agree {(got.argmax(1)==ref.argmax(1)).mean():.4f}")
