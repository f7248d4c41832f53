// AttentionView: thumbnails of every head, the selected head enlarged, and two
// token strips: where the hovered token attends (row of the pattern) and what
// attends to it (column). Traits: tokens, shape [L,H,Q,K], attention (bytes),
// dtype, packing ("dense" | "causal"), head_labels, scale, selected_head, title.

/** Accessor over the packed pattern: value(head, q, k), NaN for causally masked cells. */
function attnData(model) {
  const [L, H, Q, K] = model.get("shape");
  const data = iplFloats(model.get("attention"), model.get("dtype"));
  const causal = model.get("packing") === "causal";
  const perHead = causal ? (Q * (Q + 1)) / 2 : Q * K;
  const rowStart = (q) => (causal ? (q * (q + 1)) / 2 : q * K);
  const value = (h, q, k) => (causal && k > q ? NaN : data[h * perHead + rowStart(q) + k]);
  const headMax = new Float32Array(L * H);
  for (let h = 0; h < L * H; h++) {
    let m = 0;
    const end = (h + 1) * perHead;
    for (let i = h * perHead; i < end; i++) if (data[i] > m) m = data[i];
    headMax[h] = m;
  }
  const globalMax = headMax.reduce((a, b) => Math.max(a, b), 0);
  return { L, H, Q, K, causal, value, headMax, globalMax, rowStart, perHead, data };
}

/** Draw head h into a canvas of size (Q or fewer) x (K or fewer), max-pooling blocks. */
function attnDraw(canvas, d, h, vmax, lut, maxSide) {
  const rows = Math.min(d.Q, maxSide);
  const cols = Math.min(d.K, maxSide);
  canvas.width = cols;
  canvas.height = rows;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(cols, rows);
  const px = img.data;
  const scale = vmax > 0 ? 255 / vmax : 0;
  for (let r = 0; r < rows; r++) {
    const q0 = Math.floor((r * d.Q) / rows);
    const q1 = Math.max(q0 + 1, Math.floor(((r + 1) * d.Q) / rows));
    for (let c = 0; c < cols; c++) {
      const k0 = Math.floor((c * d.K) / cols);
      const k1 = Math.max(k0 + 1, Math.floor(((c + 1) * d.K) / cols));
      let m = -1;
      for (let q = q0; q < q1; q++) {
        const base = h * d.perHead + d.rowStart(q);
        const kEnd = d.causal ? Math.min(k1, q + 1) : k1;
        for (let k = k0; k < kEnd; k++) if (d.data[base + k] > m) m = d.data[base + k];
      }
      const o = (r * cols + c) * 4;
      if (m < 0) {
        px[o] = px[o + 1] = px[o + 2] = 236; // masked: light grey, not "zero attention"
      } else {
        const i = Math.min(255, Math.round(m * scale)) * 3;
        px[o] = lut[i];
        px[o + 1] = lut[i + 1];
        px[o + 2] = lut[i + 2];
      }
      px[o + 3] = 255;
    }
  }
  ctx.putImageData(img, 0, 0);
}

export default {
  render({ model, el }) {
    const root = iplEl("div", "ipl-root ipl-attention");
    el.replaceChildren(root);
    const lut = iplLut(iplSeq, false);
    const tokens = model.get("tokens");
    let d = attnData(model);
    let hovered = -1;

    const title = iplEl("div", "ipl-title", model.get("title") || `Attention: ${d.L * d.H} heads, ${d.Q} tokens`);
    const scaleSelect = iplEl("select", "ipl-scale");
    for (const [value, text] of [["head", "colour max: each head"], ["global", "colour max: all heads"], ["one", "colour max: 1"]]) {
      const opt = iplEl("option", "", text);
      opt.value = value;
      scaleSelect.appendChild(opt);
    }
    const legendSlot = iplEl("span", "ipl-legend-slot");
    const controls = iplEl("div", "ipl-controls");
    controls.append(scaleSelect, legendSlot, iplEl("span", "ipl-muted", d.causal ? "grey: causally masked" : ""));

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
        cell.title = thumbLabels[h];
        cell.dataset.head = String(h);
        const canvas = iplEl("canvas");
        cell.append(canvas, iplEl("div", "ipl-thumb-label", thumbLabels[h]));
        cell.addEventListener("click", () => {
          model.set("selected_head", h);
          model.save_changes();
        });
        grid.appendChild(cell);
        thumbs.push({ cell, canvas });
      }
    }

    const big = iplEl("canvas", "ipl-big");
    const bigLabel = iplEl("div", "ipl-big-label");
    const readout = iplEl("div", "ipl-readout ipl-muted", "Hover a token or a cell.");
    const rowMarker = iplEl("div", "ipl-row-marker"); // outlines the hovered query's row
    rowMarker.hidden = true;
    const bigPlot = iplEl("div", "ipl-big-plot");
    bigPlot.append(big, rowMarker);
    const bigWrap = iplEl("div", "ipl-big-wrap");
    bigWrap.append(bigLabel, bigPlot, readout);

    const makeStrip = (cls, caption) => {
      const wrap = iplEl("div", `ipl-strip ${cls}`);
      const row = iplEl("div", "ipl-tokens");
      const spans = tokens.map((tok, i) => {
        const span = iplEl("span", "ipl-token", iplTokenText(tok));
        span.dataset.index = String(i);
        span.addEventListener("mouseenter", () => setHover(i));
        row.appendChild(span);
        return span;
      });
      row.addEventListener("mouseleave", () => setHover(-1));
      wrap.append(iplEl("div", "ipl-muted", caption), row);
      return { wrap, spans };
    };
    const outStrip = makeStrip("ipl-strip-out", "Where the hovered token attends (it is the query):");
    const inStrip = makeStrip("ipl-strip-in", "What attends to the hovered token (it is the key):");

    const main = iplEl("div", "ipl-attn-main");
    main.append(grid, bigWrap);
    root.append(title, controls, main, outStrip.wrap, inStrip.wrap);
    const tooltip = iplTooltip(root);

    const vmaxFor = (h) => {
      const scale = model.get("scale");
      const m = scale === "one" ? 1 : scale === "global" ? d.globalMax : d.headMax[h];
      return m > 0 ? m : 1;
    };

    function drawThumbs() {
      for (let h = 0; h < thumbs.length; h++) attnDraw(thumbs[h].canvas, d, h, vmaxFor(h), lut, 96);
    }

    function drawSelected() {
      const h = model.get("selected_head");
      thumbs.forEach((t, i) => t.cell.classList.toggle("ipl-selected", i === h));
      attnDraw(big, d, h, vmaxFor(h), lut, 1024);
      bigLabel.textContent = `${thumbLabels[h]}  (rows: query, columns: key)`;
      legendSlot.replaceChildren(iplLegend(iplSeq, 0, vmaxFor(h), "", false));
      setHover(hovered); // readout and strips follow the newly selected head
    }

    function paintStrips() {
      const h = model.get("selected_head");
      const vmax = vmaxFor(h);
      for (let j = 0; j < tokens.length; j++) {
        const out = outStrip.spans[j];
        const inn = inStrip.spans[j];
        out.classList.toggle("ipl-active", j === hovered);
        inn.classList.toggle("ipl-active", j === hovered);
        if (hovered < 0) {
          out.style.background = inn.style.background = "";
          out.style.color = inn.style.color = "";
          out.title = inn.title = "";
          continue;
        }
        const a = hovered < d.Q ? d.value(h, hovered, j) : NaN; // hovered as query
        const b = j < d.Q ? d.value(h, j, hovered) : NaN; // hovered as key
        if (Number.isNaN(a)) { out.style.background = "#ececec"; out.style.color = "#999"; out.title = "masked"; }
        else { iplTint(out, iplSeq(a / vmax)); out.title = iplFmt(a); }
        if (Number.isNaN(b)) { inn.style.background = "#ececec"; inn.style.color = "#999"; inn.title = "masked"; }
        else { iplTint(inn, iplSeq(b / vmax)); inn.title = iplFmt(b); }
      }
    }

    function setHover(i) {
      hovered = i;
      rowMarker.hidden = i < 0 || i >= d.Q;
      rowMarker.style.top = `${(Math.max(i, 0) / d.Q) * 100}%`;
      rowMarker.style.height = `${100 / d.Q}%`;
      if (i >= 0) {
        const h = model.get("selected_head");
        let best = 0;
        for (let k = 1; k < d.K; k++) if ((d.value(h, i, k) || 0) > (d.value(h, i, best) || 0)) best = k;
        readout.textContent = `"${tokens[i]}" (${i}) attends most to "${tokens[best]}" (${best}): ${iplFmt(d.value(h, i, best))}`;
      } else {
        readout.textContent = "Hover a token or a cell.";
      }
      paintStrips();
    }

    big.addEventListener("mousemove", (event) => {
      const box = big.getBoundingClientRect();
      const q = Math.min(d.Q - 1, Math.floor(((event.clientY - box.top) / box.height) * d.Q));
      const k = Math.min(d.K - 1, Math.floor(((event.clientX - box.left) / box.width) * d.K));
      if (q < 0 || k < 0) return;
      const v = d.value(model.get("selected_head"), q, k);
      tooltip.show([`query ${q} "${tokens[q]}"`, `key ${k} "${tokens[k]}"`, Number.isNaN(v) ? "masked" : `weight ${iplFmt(v)}`], event);
      if (q !== hovered) setHover(q);
    });
    big.addEventListener("mouseleave", () => tooltip.hide());

    scaleSelect.value = model.get("scale");
    scaleSelect.addEventListener("change", () => {
      model.set("scale", scaleSelect.value);
      model.save_changes();
    });

    drawThumbs();
    drawSelected();
    const offSelected = iplWatch(model, ["selected_head"], drawSelected);
    const offScale = iplWatch(model, ["scale"], () => {
      scaleSelect.value = model.get("scale");
      drawThumbs();
      drawSelected();
    });
    const offData = iplWatch(model, ["attention", "shape", "packing", "dtype"], () => {
      d = attnData(model);
      drawThumbs();
      drawSelected();
    });
    return () => {
      offSelected();
      offScale();
      offData();
    };
  },
};
