// AttentionView: thumbnails of every head, the selected head enlarged with token
// axes, and two token strips: where a query attends (a row of the pattern) and
// what attends to a key (a column). Traits: tokens, shape [L,H,Q,K], attention
// (bytes), dtype, packing ("dense" | "causal"), head_labels, scale, gamma,
// selected_head, title.

const ATTN_SCALES = [
  ["head", "colour max: each head, first token left out"],
  ["global", "colour max: all heads, first token left out"],
  ["row", "colour max: each query row"],
  ["one", "colour max: 1"],
];
const ATTN_GAMMAS = [1, 0.7, 0.5, 0.3];
const ATTN_BIG_PX = 360;
const ATTN_LABEL_PX = 11; // one label per this many pixels at most: thinner axes skip labels

/** Accessor over the packed pattern: value(head, q, k), NaN for causally masked cells. */
function attnData(model) {
  const [L, H, Q, K] = model.get("shape");
  const data = iplFloats(model.get("attention"), model.get("dtype"));
  const causal = model.get("packing") === "causal";
  const perHead = causal ? (Q * (Q + 1)) / 2 : Q * K;
  const rowStart = (q) => (causal ? (q * (q + 1)) / 2 : q * K);
  const rowLen = (q) => (causal ? Math.min(q + 1, K) : K);
  const value = (h, q, k) => (causal && k > q ? NaN : data[h * perHead + rowStart(q) + k]);
  // Maxima for the colour scales (the same numbers as attention.py's colour_max):
  // the head's max over all cells, over q >= 1 and k >= 1, and each row's max over k >= 1.
  const headFull = new Float32Array(L * H);
  const headInner = new Float32Array(L * H);
  const rowRest = new Float32Array(L * H * Q);
  const rowFull = new Float32Array(L * H * Q);
  for (let h = 0; h < L * H; h++) {
    for (let q = 0; q < Q; q++) {
      const base = h * perHead + rowStart(q);
      let full = 0;
      let rest = 0;
      for (let k = 0; k < rowLen(q); k++) {
        const v = data[base + k];
        if (v > full) full = v;
        if (k >= 1 && v > rest) rest = v;
      }
      rowFull[h * Q + q] = full;
      rowRest[h * Q + q] = rest;
      if (full > headFull[h]) headFull[h] = full;
      if (q >= 1 && rest > headInner[h]) headInner[h] = rest;
    }
  }
  const headMax = Float32Array.from(headInner, (m, h) => (m > 0 ? m : headFull[h]));
  const globalMax = headMax.reduce((a, b) => Math.max(a, b), 0);
  return { L, H, Q, K, causal, value, perHead, rowStart, rowLen, data, headMax, globalMax, rowRest, rowFull };
}

/** vmax(h, q): the colour maximum for one head (and row, for the "row" scale). */
function attnScale(d, scale) {
  const pos = (m) => (m > 0 ? m : 1);
  if (scale === "one") return () => 1;
  if (scale === "global") return () => pos(d.globalMax);
  if (scale === "row") return (h, q) => pos(d.rowRest[h * d.Q + q] > 0 ? d.rowRest[h * d.Q + q] : d.rowFull[h * d.Q + q]);
  return (h) => pos(d.headMax[h]);
}

/** Draw head h into a canvas of at most maxSide x maxSide, max-pooling blocks of colour positions. */
function attnDraw(canvas, d, h, vmax, gamma, maxSide) {
  const rows = Math.min(d.Q, maxSide);
  const cols = Math.min(d.K, maxSide);
  canvas.width = cols;
  canvas.height = rows;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(cols, rows);
  const px = img.data;
  const lut = iplLut(iplSeq, false);
  const masked = iplMaskedRgb();
  for (let r = 0; r < rows; r++) {
    const q0 = Math.floor((r * d.Q) / rows);
    const q1 = Math.max(q0 + 1, Math.floor(((r + 1) * d.Q) / rows));
    for (let c = 0; c < cols; c++) {
      const k0 = Math.floor((c * d.K) / cols);
      const k1 = Math.max(k0 + 1, Math.floor(((c + 1) * d.K) / cols));
      let m = -1;
      for (let q = q0; q < q1; q++) {
        const base = h * d.perHead + d.rowStart(q);
        const kEnd = Math.min(k1, d.rowLen(q));
        const inv = 1 / vmax(h, q);
        for (let k = k0; k < kEnd; k++) {
          const t = Math.min(1, d.data[base + k] * inv);
          if (t > m) m = t;
        }
      }
      const o = (r * cols + c) * 4;
      if (m < 0) {
        px[o] = masked[0]; // causally masked: grey, not "zero attention"
        px[o + 1] = masked[1];
        px[o + 2] = masked[2];
      } else {
        const i = Math.min(255, Math.round((gamma === 1 ? m : m ** gamma) * 255)) * 3;
        px[o] = lut[i];
        px[o + 1] = lut[i + 1];
        px[o + 2] = lut[i + 2];
      }
      px[o + 3] = 255;
    }
  }
  ctx.putImageData(img, 0, 0);
}

/** Token labels along one axis of the enlarged head, thinned so they never overlap. */
function attnAxis(tokens, n, vertical) {
  const axis = iplEl("div", vertical ? "ipl-axis-y" : "ipl-axis-x");
  const step = Math.max(1, Math.ceil(ATTN_LABEL_PX / (ATTN_BIG_PX / Math.max(n, 1))));
  for (let i = 0; i < n; i += step) {
    const lab = iplEl("div", "ipl-axis-label", iplTokenText(tokens[i]));
    lab.dataset.index = String(i);
    lab.title = `${i}: ${iplQuote(tokens[i])}`;
    const centre = ((i + 0.5) / n) * 100;
    if (vertical) lab.style.top = `calc(${centre}% - 6px)`;
    else lab.style.left = `calc(${centre}% - 6px)`;
    axis.appendChild(lab);
  }
  axis.dataset.step = String(step);
  if (!vertical) {
    // Rotated labels: the strip is as tall as the longest label needs, up to 76 px.
    const longest = tokens.slice(0, n).reduce((m, t) => Math.max(m, iplTokenText(t).length), 1);
    axis.style.height = `${Math.min(76, 8 + 7 * longest)}px`;
  }
  return axis;
}

export default {
  render({ model, el }) {
    const root = iplEl("div", "ipl-root ipl-attention");
    el.replaceChildren(root);
    const tokens = model.get("tokens");
    let d = attnData(model);
    // What the pointer or keyboard points at: a query row and/or a key column (-1: none).
    let hover = { q: -1, k: -1 };
    let preview = -1; // head previewed by hovering a thumbnail, -1 for none

    const title = iplEl("div", "ipl-title", model.get("title") || `Attention: ${d.L * d.H} heads, ${d.Q} tokens`);
    const scaleSelect = iplEl("select", "ipl-scale");
    scaleSelect.setAttribute("aria-label", "colour scale");
    for (const [value, text] of ATTN_SCALES) {
      const opt = iplEl("option", "", text);
      opt.value = value;
      scaleSelect.appendChild(opt);
    }
    const gammaSelect = iplEl("select", "ipl-gamma");
    gammaSelect.setAttribute("aria-label", "gamma");
    gammaSelect.title = "colour = (weight / max) ^ gamma; below 1 brings out weak attention";
    const legendSlot = iplEl("span", "ipl-legend-slot");
    const controls = iplEl("div", "ipl-controls");
    controls.append(scaleSelect, gammaSelect, legendSlot, iplEl("span", "ipl-muted", d.causal ? "grey: causally masked" : ""));

    const grid = iplEl("div", "ipl-grid");
    grid.style.gridTemplateColumns = `auto repeat(${d.H}, auto)`;
    const thumbs = [];
    const thumbLabels = model.get("head_labels");
    for (let l = 0; l < d.L; l++) {
      grid.appendChild(iplEl("div", "ipl-row-label", d.L > 1 ? `L${l}` : ""));
      for (let hh = 0; hh < d.H; hh++) {
        const h = l * d.H + hh;
        const cell = iplEl("button", "ipl-thumb");
        cell.type = "button";
        cell.title = `${thumbLabels[h]} (hover: preview, click: select)`;
        cell.dataset.head = String(h);
        const canvas = iplEl("canvas");
        cell.append(canvas, iplEl("div", "ipl-thumb-label", thumbLabels[h]));
        cell.addEventListener("click", () => {
          preview = -1;
          model.set("selected_head", h);
          model.save_changes();
        });
        cell.addEventListener("mouseenter", () => setPreview(h));
        cell.addEventListener("focus", () => setPreview(h));
        cell.addEventListener("blur", () => setPreview(-1));
        grid.appendChild(cell);
        thumbs.push({ cell, canvas });
      }
    }
    grid.addEventListener("mouseleave", () => setPreview(-1));

    const big = iplEl("canvas", "ipl-big");
    big.tabIndex = 0;
    big.setAttribute("role", "img");
    big.setAttribute("aria-label", "enlarged head; arrow keys move between cells, Escape leaves");
    const bigLabel = iplEl("div", "ipl-big-label");
    const readout = iplEl("div", "ipl-readout ipl-muted");
    const rowMarker = iplEl("div", "ipl-row-marker"); // outlines the query's row
    const colMarker = iplEl("div", "ipl-col-marker"); // outlines the key's column
    rowMarker.hidden = colMarker.hidden = true;
    const bigPlot = iplEl("div", "ipl-big-plot");
    bigPlot.append(big, rowMarker, colMarker);
    const yAxis = attnAxis(tokens, d.Q, true);
    const xAxis = attnAxis(tokens, d.K, false);
    const bigFrame = iplEl("div", "ipl-big-frame");
    bigFrame.append(iplEl("div", "ipl-axis-name ipl-axis-name-y", "query"), yAxis, bigPlot, iplEl("div"), iplEl("div"), xAxis,
      iplEl("div"), iplEl("div"), iplEl("div", "ipl-axis-name", "key"));
    const bigWrap = iplEl("div", "ipl-big-wrap");
    bigWrap.append(bigLabel, bigFrame, readout);

    const makeStrip = (cls, caption, role) => {
      const wrap = iplEl("div", `ipl-strip ${cls}`);
      const row = iplEl("div", "ipl-tokens");
      row.tabIndex = 0;
      row.setAttribute("aria-label", `${caption} Left and right arrows move, Escape leaves.`);
      const spans = tokens.map((tok, i) => {
        const span = iplEl("span", "ipl-token", iplTokenText(tok));
        span.dataset.index = String(i);
        span.addEventListener("mouseenter", () => setHover(role === "query" ? { q: i, k: -1 } : { q: -1, k: i }));
        row.appendChild(span);
        return span;
      });
      row.addEventListener("mouseleave", leave);
      row.addEventListener("keydown", (event) => {
        const cur = role === "query" ? hover.q : hover.k;
        if (event.key === "Escape") return leave();
        const next = iplArrow(event, 0, Math.max(cur, 0), 1, tokens.length);
        if (!next) return;
        const i = cur < 0 ? 0 : next[1];
        setHover(role === "query" ? { q: i, k: -1 } : { q: -1, k: i });
      });
      wrap.append(iplEl("div", "ipl-muted", caption), row);
      return { wrap, spans };
    };
    const outStrip = makeStrip("ipl-strip-out", "Where the hovered token attends (it is the query):", "query");
    const inStrip = makeStrip("ipl-strip-in", "What attends to the hovered token (it is the key):", "key");

    const main = iplEl("div", "ipl-attn-main");
    main.append(grid, bigWrap);
    root.append(title, controls, main, outStrip.wrap, inStrip.wrap);
    const tooltip = iplTooltip(root);

    let vmax = attnScale(d, model.get("scale"));
    const gamma = () => model.get("gamma") || 1;
    const shownHead = () => (preview >= 0 ? preview : model.get("selected_head"));

    function fillGamma() {
      const values = [...new Set([...ATTN_GAMMAS, gamma()])].sort((a, b) => b - a);
      gammaSelect.replaceChildren(...values.map((g) => {
        const opt = iplEl("option", "", `gamma ${g}`);
        opt.value = String(g);
        return opt;
      }));
      gammaSelect.value = String(gamma());
    }

    function drawThumbs() {
      for (let h = 0; h < thumbs.length; h++) attnDraw(thumbs[h].canvas, d, h, vmax, gamma(), 96);
    }

    function drawBig() {
      const h = shownHead();
      const sel = model.get("selected_head");
      thumbs.forEach((t, i) => {
        t.cell.classList.toggle("ipl-selected", i === sel);
        t.cell.classList.toggle("ipl-previewed", i === preview && preview !== sel);
        t.cell.setAttribute("aria-pressed", String(i === sel));
      });
      attnDraw(big, d, h, vmax, gamma(), 1024);
      const what = preview >= 0 && preview !== sel ? "preview: " : "";
      bigLabel.textContent = `${what}${thumbLabels[h]}`;
      bigFrame.classList.toggle("ipl-previewing", what !== "");
      const scale = model.get("scale");
      const hi = scale === "row" ? "row max" : iplFmt(vmax(h, 0));
      const g = gamma() === 1 ? "" : `^${gamma()}`;
      legendSlot.replaceChildren(iplLegend(iplSeq, 0, 1, `weight${g}`, false, "0", `\u2265 ${hi}`));
      setHover(hover); // readout and strips follow the head on show
    }

    function setPreview(h) {
      if (h === preview) return;
      preview = h;
      drawBig();
    }

    function paintStrip(spans, active, valueAt) {
      const h = shownHead();
      const masked = iplMaskedRgb();
      for (let j = 0; j < tokens.length; j++) {
        const span = spans[j];
        span.classList.toggle("ipl-active", j === active);
        if (active < 0) {
          span.style.background = span.style.color = "";
          span.title = "";
          continue;
        }
        const [v, q] = valueAt(j);
        if (Number.isNaN(v)) {
          iplTint(span, masked);
          span.title = "masked";
        } else {
          const t = Math.min(1, v / vmax(h, q));
          iplTint(span, iplSeq(t ** gamma()));
          span.title = iplFmt(v);
        }
      }
    }

    function setHover(next) {
      hover = next;
      const { q, k } = hover;
      const h = shownHead();
      rowMarker.hidden = q < 0 || q >= d.Q;
      rowMarker.style.top = `${(Math.max(q, 0) / d.Q) * 100}%`;
      rowMarker.style.height = `${100 / d.Q}%`;
      colMarker.hidden = k < 0 || k >= d.K;
      colMarker.style.left = `${(Math.max(k, 0) / d.K) * 100}%`;
      colMarker.style.width = `${100 / d.K}%`;
      for (const lab of root.querySelectorAll(".ipl-axis-label")) {
        const i = Number(lab.dataset.index);
        lab.classList.toggle("ipl-active", lab.parentNode === yAxis ? i === q : i === k);
      }
      paintStrip(outStrip.spans, q, (j) => [q >= 0 && q < d.Q && j < d.K ? d.value(h, q, j) : NaN, q]);
      paintStrip(inStrip.spans, k, (j) => [j < d.Q && k >= 0 && k < d.K ? d.value(h, j, k) : NaN, j]);
      if (q >= 0 && k >= 0) {
        const v = d.value(h, q, k);
        readout.textContent = `query ${q} ${iplQuote(tokens[q])} \u2192 key ${k} ${iplQuote(tokens[k])}: ${Number.isNaN(v) ? "masked" : iplFmt(v)}`;
      } else if (q >= 0) {
        let best = 0;
        for (let j = 1; j < d.K; j++) if ((d.value(h, q, j) || 0) > (d.value(h, q, best) || 0)) best = j;
        readout.textContent = `"${tokens[q]}" (${q}) attends most to "${tokens[best]}" (${best}): ${iplFmt(d.value(h, q, best))}`;
      } else if (k >= 0) {
        let best = -1;
        for (let j = 0; j < d.Q; j++) if (!Number.isNaN(d.value(h, j, k)) && (best < 0 || d.value(h, j, k) > d.value(h, best, k))) best = j;
        readout.textContent = best < 0 ? `nothing attends to "${tokens[k]}" (${k})`
          : `"${tokens[k]}" (${k}) gets most attention from "${tokens[best]}" (${best}): ${iplFmt(d.value(h, best, k))}`;
      } else {
        readout.textContent = "Hover a token or a cell (or focus one and use the arrow keys).";
      }
    }

    function leave() {
      tooltip.hide();
      setHover({ q: -1, k: -1 });
    }

    function showCell(q, k, at) {
      const v = d.value(shownHead(), q, k);
      tooltip.show([`query ${q} ${iplQuote(tokens[q])}`, `key ${k} ${iplQuote(tokens[k])}`, Number.isNaN(v) ? "masked" : `weight ${iplFmt(v)}`], at);
      if (q !== hover.q || k !== hover.k) setHover({ q, k });
    }

    big.addEventListener("mousemove", (event) => {
      const box = big.getBoundingClientRect();
      const q = Math.min(d.Q - 1, Math.floor(((event.clientY - box.top) / box.height) * d.Q));
      const k = Math.min(d.K - 1, Math.floor(((event.clientX - box.left) / box.width) * d.K));
      if (q < 0 || k < 0) return;
      showCell(q, k, event);
    });
    big.addEventListener("mouseleave", leave);
    big.addEventListener("blur", leave);
    big.addEventListener("keydown", (event) => {
      if (event.key === "Escape") return leave();
      const next = iplArrow(event, Math.max(hover.q, 0), Math.max(hover.k, 0), d.Q, d.K);
      if (!next) return;
      const [q, k] = hover.q < 0 || hover.k < 0 ? [0, 0] : next;
      const box = big.getBoundingClientRect();
      showCell(q, k, { clientX: box.left + ((k + 1) / d.K) * box.width, clientY: box.top + ((q + 1) / d.Q) * box.height });
    });

    scaleSelect.addEventListener("change", () => {
      model.set("scale", scaleSelect.value);
      model.save_changes();
    });
    gammaSelect.addEventListener("change", () => {
      model.set("gamma", Number(gammaSelect.value));
      model.save_changes();
    });

    function redrawAll() {
      vmax = attnScale(d, model.get("scale"));
      scaleSelect.value = model.get("scale");
      fillGamma();
      drawThumbs();
      drawBig();
    }
    redrawAll();
    const offSelected = iplWatch(model, ["selected_head"], drawBig);
    const offScale = iplWatch(model, ["scale", "gamma"], redrawAll);
    const offData = iplWatch(model, ["attention", "shape", "packing", "dtype"], () => {
      d = attnData(model);
      redrawAll();
    });
    const offTheme = iplOnTheme(redrawAll);
    return () => {
      offSelected();
      offScale();
      offData();
      offTheme();
    };
  },
};
