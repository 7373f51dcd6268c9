import time, statistics, numpy as np, torch, sys
from pathlib import Path
from core.trainer import load_checkpoint
out = Path("/tmp/mobprobe/out"); d = np.load(out / "data.npz")
X, y, ref = d["X"], d["y"], d["ref"]
model, _ = load_checkpoint("/tmp/mobprobe/home/pocketops-files/runs/1/best.pt")
torch.set_num_threads(1)
from executorch import version as _v; print("executorch", _v.__version__, "torch", torch.__version__)
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.exir import to_edge_transform_and_lower
def p50(fn, n=2000):
    for i in range(200): fn(X[i % len(X):i % len(X) + 1])
    ts = []
    for i in range(n):
        a = X[i % len(X):i % len(X) + 1]; t = time.perf_counter_ns(); fn(a); ts.append(time.perf_counter_ns() - t)
    return statistics.median(ts) / 1e6
def export_pte(m, path, example):
    t = time.perf_counter()
    ep = torch.export.export(m, (example,))
    prog = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch()
    path.write_bytes(prog.buffer)
    return time.perf_counter() - t
ex = torch.from_numpy(X[:1])
variants = {}
s = export_pte(model, out / "fp32.pte", ex); variants["executorch-fp32"] = out / "fp32.pte"; print(f"export fp32 {s:.1f} s")
try:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config
    t = time.perf_counter()
    q = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    gm = torch.export.export(model, (ex,)).module()
    gm = prepare_pt2e(gm, q)
    for i in range(256): gm(torch.from_numpy(d["X_train"][i:i+1]))
    gm = convert_pt2e(gm)
    ep = torch.export.export(gm, (ex,))
    prog = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch()
    (out / "int8.pte").write_bytes(prog.buffer); variants["executorch-int8"] = out / "int8.pte"
    print(f"export int8 {time.perf_counter()-t:.1f} s")
except Exception as e:
    import traceback; traceback.print_exc(limit=3); print("INT8 FAILED:", type(e).__name__, str(e)[:300])
from executorch.runtime import Runtime
rt = Runtime.get()
for name, path in variants.items():
    t = time.perf_counter(); prog = rt.load_program(path); meth = prog.load_method("forward"); load = (time.perf_counter() - t) * 1e3
    got = np.concatenate([meth.execute([torch.from_numpy(X[i:i+1])])[0].numpy() for i in range(len(X))])
    lat = p50(lambda a: meth.execute([torch.from_numpy(a)]))
    print(f"{name:16s} size {path.stat().st_size} load {load:.1f} ms p50 {lat:.4f} ms max|dlogit| {np.abs(got-ref).max():.2e} "
          f"acc {(got.argmax(1)==y).mean():.4f} agree {(got.argmax(1)==ref.argmax(1)).mean():.4f}")
with torch.no_grad(): print(f"torch eager p50 {p50(lambda a: model(torch.from_numpy(a))):.4f} ms")
