const SIZE = 280;   // canvas side, px; preprocess fits any drawing into MNIST's 20x20 box
const PEN = 20;     // stroke width, px: about 2 px at 28x28, MNIST's pen

function element(tag, cls, testid) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (testid) e.dataset.testid = testid;
  return e;
}

function render({ model, el }) {
  const root = element("div", "digit-pad", "digit-pad");
  root.dataset.state = "empty";   // empty | pending (stroke sent) | ready (its answer shown)
  const left = element("div", "digit-pad-left");
  const canvas = element("canvas", "digit-pad-canvas", "digit-canvas");
  canvas.width = canvas.height = SIZE;
  const clear = element("button", "digit-pad-clear jp-mod-styled", "digit-clear");
  clear.textContent = "Clear";
  left.append(canvas, clear);

  const right = element("div", "digit-pad-right");
  const answer = element("div", "digit-pad-answer", "digit-prediction");
  const seenLabel = element("div", "digit-pad-note");
  seenLabel.textContent = "what the model sees (28×28):";
  const seen = element("canvas", "digit-pad-seen", "digit-seen");
  seen.width = seen.height = 28;
  const bars = element("div", "digit-pad-bars", "digit-probabilities");
  const rows = [];
  for (let d = 0; d < 10; d++) {
    const row = element("div", "digit-pad-row", "digit-probability");
    row.dataset.digit = String(d);
    const label = element("span", "digit-pad-label");
    label.textContent = String(d);
    const track = element("span", "digit-pad-track");
    const fill = element("span", "digit-pad-fill");
    track.append(fill);
    const value = element("span", "digit-pad-value");
    row.append(label, track, value);
    bars.append(row);
    rows.push({ row, fill, value });
  }
  const note = element("div", "digit-pad-note", "digit-message");
  right.append(answer, bars, seenLabel, seen, note);

  el.append(root);
  root.append(left, right);

  const ctx = canvas.getContext("2d");
  function blank() {
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, SIZE, SIZE);
  }
  blank();
  ctx.strokeStyle = ctx.fillStyle = "#fff";
  ctx.lineWidth = PEN;
  ctx.lineCap = ctx.lineJoin = "round";

  let sent = model.get("drawing").id || 0;   // id of the last drawing sent to the kernel
  let last = null;                            // pen position while a stroke is under way
  function at(event) {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * SIZE / box.width, (event.clientY - box.top) * SIZE / box.height];
  }
  function send(png) {
    sent += 1;
    root.dataset.state = png ? "pending" : "empty";
    model.set("drawing", { id: sent, png });
    model.save_changes();
  }
  canvas.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    event.preventDefault();   // no text selection, no cell drag
    canvas.setPointerCapture(event.pointerId);
    last = at(event);
    ctx.fillStyle = "#fff";
    ctx.beginPath();
    ctx.arc(last[0], last[1], PEN / 2, 0, 2 * Math.PI);
    ctx.fill();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!last) return;
    const p = at(event);
    ctx.beginPath();
    ctx.moveTo(last[0], last[1]);
    ctx.lineTo(p[0], p[1]);
    ctx.stroke();
    last = p;
  });
  function end() {
    if (!last) return;
    last = null;
    send(canvas.toDataURL("image/png"));
  }
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  clear.addEventListener("click", () => { blank(); send(""); });

  const seenCtx = seen.getContext("2d");
  function show() {
    const r = model.get("prediction") || {};
    const probs = r.probabilities || [];
    const ready = r.id === sent && probs.length === 10;
    answer.textContent = ready ? String(r.digit) : "–";
    answer.dataset.digit = ready ? String(r.digit) : "";
    rows.forEach(({ row, fill, value }, d) => {
      const p = ready ? probs[d] : 0;
      row.dataset.probability = ready ? String(p) : "";
      row.classList.toggle("best", ready && d === r.digit);
      fill.style.width = `${(100 * p).toFixed(1)}%`;
      value.textContent = ready ? `${(100 * p).toFixed(1)}%` : "";
    });
    const pixels = ready && r.pixels ? r.pixels : [];
    const img = seenCtx.createImageData(28, 28);
    for (let i = 0; i < 28 * 28; i++) {
      const v = pixels[i] || 0;
      img.data.set([v, v, v, 255], 4 * i);
    }
    seenCtx.putImageData(img, 0, 0);
    note.textContent = r.id === sent ? (r.message || "") : "";
    if (r.id === sent) root.dataset.state = ready ? "ready" : "empty";
    else if (!sent) root.dataset.state = "empty";
  }
  model.on("change:prediction", show);
  show();
  return () => model.off("change:prediction", show);
}

export default { render };
