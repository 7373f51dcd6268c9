// pocketops static page: run the bundle's model in the visitor's browser with onnxruntime-web.
// Image models: draw on a grid (tap a cell, or press and move; a tap on a lit cell erases).
// Tabular models: one field per feature. Text models: a textarea.
// Test hooks (each writes JSON into #result, then sets <body data-status="done">):
//   ?sample=<JSON raw input>   predicts that sample directly: the probabilities;
//   ?fill=<JSON values|text>   types into the fields / textarea like a visitor and taps Predict:
//                              the probabilities and the top classes the page shows;
//   ?taps=[[row, col], ...]    taps those cells of the drawing grid, then predicts.
(async function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const setStatus = (text, kind) => { const el = $("status"); el.textContent = text; el.dataset.kind = kind || ""; };
  const params = new URLSearchParams(location.search);

  let info, session;
  try {
    info = await (await fetch("model.json", { cache: "no-store" })).json();
    ort.env.wasm.numThreads = 1;              // threads need cross-origin isolation headers
    ort.env.wasm.wasmPaths = window.POCKETOPS_WASM_PATHS;
    session = await ort.InferenceSession.create("model.onnx", { executionProviders: ["wasm"] });
  } catch (err) {
    setStatus("Could not load the model: " + err, "error");
    $("result").textContent = "error: " + err;
    document.body.dataset.status = "error";
    return;
  }

  const spec = info.input;
  const shape = spec.shape.map(Number);
  const size = shape.reduce((a, b) => a * b, 1);
  const prep = info.preprocessing || {};
  const labels = info.labels;

  // -- preprocessing: the same arithmetic as predictor.py ------------------------------------
  function tokenize(text) {
    const maxLen = Number(prep.max_len || shape[shape.length - 1] || 256);
    const bytes = new TextEncoder().encode(text).slice(0, maxLen);
    const ids = new Array(maxLen).fill(0);
    bytes.forEach((b, i) => { ids[i] = b + 1; });
    return ids;
  }

  function toTensor(raw) {
    const flat = raw.flat(Infinity).map(Number);
    if (flat.length !== size) throw new Error(`expected ${size} values, got ${flat.length}`);
    if (spec.dtype.startsWith("int")) {
      return new ort.Tensor("int64", BigInt64Array.from(flat.map((v) => BigInt(Math.round(v)))), [1, ...shape]);
    }
    const x = new Float32Array(size);
    const per = (v, i) => (Array.isArray(v) ? Number(v[i]) : Number(v));
    for (let i = 0; i < size; i++) {
      let v = flat[i];
      if (prep.scale != null) v *= Number(prep.scale);
      if (prep.mean != null) v -= per(prep.mean, i);
      if (prep.std != null) { const s = per(prep.std, i); v /= (s === 0 ? 1 : s); }
      x[i] = v;
    }
    return new ort.Tensor("float32", x, [1, ...shape]);
  }

  function softmax(values) {
    const max = Math.max(...values);
    const exp = values.map((v) => Math.exp(v - max));
    const sum = exp.reduce((a, b) => a + b, 0);
    return exp.map((v) => v / sum);
  }

  async function predict(raw) {
    const feeds = { [session.inputNames[0]]: toTensor(raw) };
    const out = await session.run(feeds);
    const values = Array.from(out[session.outputNames[0]].data, Number);
    return (info.output && info.output.kind === "probabilities") ? values : softmax(values);
  }

  function showTop(probs) {
    const order = probs.map((p, i) => [p, i]).sort((a, b) => b[0] - a[0]).slice(0, 3);
    const top = $("top");
    top.innerHTML = "";
    for (const [p, i] of order) {
      const row = document.createElement("div");
      row.className = "row";
      const name = document.createElement("strong");
      name.textContent = labels[i];
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.style.width = (100 * p).toFixed(1) + "%";
      const pct = document.createElement("span");
      pct.textContent = (100 * p).toFixed(1) + "%";
      row.append(name, bar, pct);
      top.append(row);
    }
  }

  async function run(raw) {
    try {
      const probs = await predict(raw);
      showTop(probs);
      setStatus("Top class: " + labels[probs.indexOf(Math.max(...probs))]);
      return probs;
    } catch (err) {
      setStatus("Prediction failed: " + err.message, "error");
      throw err;
    }
  }

  function button(text, onClick, secondary) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = text;
    if (secondary) b.className = "secondary";
    b.addEventListener("click", onClick);
    $("actions").append(b);
    return b;
  }

  // -- inputs per kind -----------------------------------------------------------------------
  let read, fillInputs = null;
  if (spec.kind === "image" && shape.length >= 2) {
    const h = shape[shape.length - 2], w = shape[shape.length - 1];
    const max = Number((spec.value_range || [0, 1])[1]);
    const cells = new Float32Array(h * w);
    const cell = 40;
    const canvas = document.createElement("canvas");
    canvas.width = w * cell; canvas.height = h * cell;
    canvas.setAttribute("aria-label", `draw here: ${w} by ${h} cells`);
    $("inputs").append(canvas);
    const ctx = canvas.getContext("2d");
    const draw = () => {
      for (let r = 0; r < h; r++) for (let c = 0; c < w; c++) {
        const v = Math.round(255 - 255 * cells[r * w + c] / max);
        ctx.fillStyle = `rgb(${v},${v},${v})`;
        ctx.fillRect(c * cell, r * cell, cell - 1, cell - 1);
      }
    };
    let painting = false, erase = false, timer = null;
    const cellAt = (ev) => {
      const rect = canvas.getBoundingClientRect();
      const c = Math.floor((ev.clientX - rect.left) / rect.width * w);
      const r = Math.floor((ev.clientY - rect.top) / rect.height * h);
      return (r >= 0 && r < h && c >= 0 && c < w) ? r * w + c : -1;
    };
    const paint = (ev) => {
      const i = cellAt(ev);
      if (i < 0) return;
      cells[i] = erase ? 0 : max;
      draw();
      clearTimeout(timer);
      timer = setTimeout(() => run(read()), 120);
    };
    canvas.addEventListener("pointerdown", (ev) => {
      const i = cellAt(ev);
      erase = i >= 0 && cells[i] > 0;        // a tap on a lit cell erases it
      painting = true;
      try { canvas.setPointerCapture(ev.pointerId); } catch (_) { /* synthetic events have no capture */ }
      paint(ev);
    });
    canvas.addEventListener("pointermove", (ev) => { if (painting) paint(ev); });
    const end = () => { painting = false; };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    read = () => Array.from(cells);
    // Test hook: ?taps=[[row, col], ...] taps those cells like a finger would (down, up).
    window.__pocketopsTap = (r, c) => {
      const rect = canvas.getBoundingClientRect();
      const at = { clientX: rect.left + (c + 0.5) * rect.width / w, clientY: rect.top + (r + 0.5) * rect.height / h,
                   pointerId: 1, bubbles: true };
      canvas.dispatchEvent(new PointerEvent("pointerdown", at));
      canvas.dispatchEvent(new PointerEvent("pointerup", at));
    };
    button("Clear", () => { cells.fill(0); draw(); $("top").innerHTML = ""; setStatus("Draw a digit"); }, true);
    draw();
    setStatus("Tap cells or draw with your finger");
  } else if (spec.kind === "text") {
    const area = document.createElement("textarea");
    area.rows = 4; area.placeholder = "Type some text";
    $("inputs").append(area);
    read = () => tokenize(area.value);
    fillInputs = (text) => { area.value = String(text); area.dispatchEvent(new Event("input", { bubbles: true })); };
    setStatus("Type, then Predict");
  } else {
    const names = spec.features || Array.from({ length: size }, (_, i) => "feature " + (i + 1));
    const fields = names.map((name) => {
      const label = document.createElement("label");
      label.textContent = name;
      const input = document.createElement("input");
      input.type = "number"; input.step = "any"; input.value = "0"; input.inputMode = "decimal";
      label.append(input);
      $("inputs").append(label);
      return input;
    });
    read = () => fields.map((f) => Number(f.value || 0));
    fillInputs = (values) => values.forEach((v, i) => {
      fields[i].value = String(v);
      fields[i].dispatchEvent(new Event("input", { bubbles: true }));
    });
    setStatus("Fill the fields, then Predict");
  }
  let lastRun = null;
  const predictButton = button("Predict", () => { lastRun = run(read()); lastRun.catch(() => {}); });
  document.body.dataset.status = "ready";

  const fill = params.get("fill");
  if (fill !== null && fillInputs) {
    try {
      fillInputs(JSON.parse(fill));
      predictButton.click();
      const probs = await lastRun;
      const shown = Array.from($("top").children, (row) => Array.from(row.children, (c) => c.textContent));
      $("result").textContent = JSON.stringify({ probabilities: probs, shown: shown, status: $("status").textContent });
      document.body.dataset.status = "done";
    } catch (err) {
      $("result").textContent = "error: " + err;
      document.body.dataset.status = "error";
    }
  }

  const taps = params.get("taps");
  if (taps !== null && window.__pocketopsTap) {
    for (const [r, c] of JSON.parse(taps)) window.__pocketopsTap(r, c);
    const probs = await run(read());
    $("result").textContent = JSON.stringify({ cells: read(), probabilities: probs });
    document.body.dataset.status = "done";
  }
  const sample = params.get("sample");
  if (sample !== null) {
    try {
      let raw = JSON.parse(sample);
      if (typeof raw === "string") raw = tokenize(raw);
      const probs = await run(raw);
      $("result").textContent = JSON.stringify(probs);
      document.body.dataset.status = "done";
    } catch (err) {
      $("result").textContent = "error: " + err;
      document.body.dataset.status = "error";
    }
  }
})();
