// FeatureDashboard: top-activating contexts (tokens tinted, peak token marked),
// an activation histogram, promoted / suppressed logits, an optional label.
// Traits: title, label, context_tokens, context_lengths, context_values,
// hist_counts, hist_edges, density, promoted_tokens, promoted_values,
// suppressed_tokens, suppressed_values, selected_context.

const SVG_NS = "http://www.w3.org/2000/svg"; // an XML namespace name, never fetched

function featSvg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

/** How often the unit fires, in words that mean something for dense units too (as feature.py's density_text). */
function featDensityText(density, signed) {
  if (density < 0) return "";
  if (signed) return `${Math.round(density * 100)}% of sampled activations are non-zero (a dense unit; the histogram shows every value)`;
  if (density >= 0.5) return `active (> 0) on ${Math.round(density * 100)}% of sampled tokens, so not sparse`;
  const one = density > 0 ? ` (1 in ${Math.max(1, Math.round(1 / density))})` : " (1 in none)";
  return `active (> 0) on ${(density * 100).toFixed(2)}% of sampled tokens${one}`;
}

/** Log-scale count histogram with both axes, so the rare high-activation tail stays visible and hoverable. */
function featHistogram(counts, edges, density, signed, tooltip) {
  const wrap = iplEl("div", "ipl-hist");
  wrap.appendChild(iplEl("div", "ipl-subtitle", signed ? "activation histogram (all sampled values)" : "activation histogram (non-zero values)"));
  if (counts.length === 0) {
    wrap.appendChild(iplEl("div", "ipl-muted", density >= 0 ? "no non-zero activations in the sample" : "no sample given"));
    return wrap;
  }
  const W = 260;
  const H = 90;
  const left = 40;
  const bottom = 28;
  const svg = featSvg("svg", { width: W + left + 6, height: H + bottom + 4, class: "ipl-hist-svg" });
  const cmax = Math.max(...counts, 1);
  const top = Math.log10(cmax + 1);
  const y = (c) => H - (Math.log10(c + 1) / top) * H;
  // y axis: powers of ten up to the largest count
  svg.appendChild(featSvg("line", { x1: left, y1: 0, x2: left, y2: H, class: "ipl-axis-line" }));
  for (let p = 0; 10 ** p <= cmax; p++) {
    const yy = y(10 ** p);
    svg.appendChild(featSvg("line", { x1: left - 3, y1: yy, x2: left, y2: yy, class: "ipl-axis-line" }));
    const lab = featSvg("text", { x: left - 5, y: yy + 3, "text-anchor": "end", class: "ipl-axis" });
    lab.textContent = p === 0 ? "1" : p < 4 ? String(10 ** p) : `1e${p}`;
    svg.appendChild(lab);
  }
  const ylab = featSvg("text", { x: 0, y: 0, class: "ipl-axis", transform: `translate(9, ${H / 2}) rotate(-90)`, "text-anchor": "middle" });
  ylab.textContent = "count (log)";
  svg.appendChild(ylab);
  // x axis: the activation range
  svg.appendChild(featSvg("line", { x1: left, y1: H, x2: left + W, y2: H, class: "ipl-axis-line" }));
  const lo = edges[0];
  const hi = edges[edges.length - 1];
  const xOf = (v) => left + ((v - lo) / (hi - lo || 1)) * W;
  for (let i = 0; i <= 4; i++) {
    const v = lo + ((hi - lo) * i) / 4;
    const xx = xOf(v);
    svg.appendChild(featSvg("line", { x1: xx, y1: H, x2: xx, y2: H + 3, class: "ipl-axis-line" }));
    const lab = featSvg("text", { x: xx, y: H + 13, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle", class: "ipl-axis" });
    lab.textContent = iplFmt(v);
    svg.appendChild(lab);
  }
  const xlab = featSvg("text", { x: left + W / 2, y: H + 25, "text-anchor": "middle", class: "ipl-axis" });
  xlab.textContent = "activation";
  svg.appendChild(xlab);
  const bw = W / counts.length;
  counts.forEach((c, i) => {
    // The full-height strip is the hover target, so a bin with a count of 1 is as easy to hover as the tallest.
    const hit = featSvg("rect", { x: left + i * bw, y: 0, width: bw, height: H, class: "ipl-bar-hit" });
    const bar = featSvg("rect", { x: left + i * bw, y: y(c), width: Math.max(1, bw - 1), height: Math.max(H - y(c), c > 0 ? 1 : 0), class: "ipl-bar" });
    bar.dataset.bin = String(i);
    hit.dataset.bin = String(i);
    const show = (event) => tooltip.show([`[${iplFmt(edges[i])}, ${iplFmt(edges[i + 1])})`, `count ${c}`], event);
    for (const node of [hit, bar]) {
      node.addEventListener("mousemove", show);
      node.addEventListener("mouseleave", () => tooltip.hide());
    }
    svg.append(hit, bar);
  });
  wrap.appendChild(svg);
  return wrap;
}

function featLogits(caption, tokens, values, sign) {
  const wrap = iplEl("div", "ipl-logits");
  wrap.appendChild(iplEl("div", "ipl-subtitle", caption));
  const vmax = Math.max(...Array.from(values, Math.abs), 1e-12);
  tokens.forEach((tok, i) => {
    const row = iplEl("div", "ipl-logit-row");
    const bar = iplEl("span", "ipl-logit-bar");
    bar.style.width = `${(Math.abs(values[i]) / vmax) * 60}px`;
    bar.style.background = iplRgb(sign > 0 ? iplSeq(0.7) : iplDiv(-0.7));
    row.append(iplEl("span", "ipl-token", iplTokenText(tok)), bar, iplEl("span", "ipl-muted", iplFmt(values[i])));
    wrap.appendChild(row);
  });
  return wrap;
}

export default {
  render({ model, el }) {
    const root = iplEl("div", "ipl-root ipl-feature");
    el.replaceChildren(root);
    const tokens = model.get("context_tokens");
    const lengths = model.get("context_lengths");
    const values = iplFloats(model.get("context_values"), "float32");
    const tooltip = iplTooltip(root);

    const head = iplEl("div", "ipl-title", model.get("title"));
    if (model.get("label")) head.appendChild(iplEl("span", "ipl-label", model.get("label")));
    const maxAbs = values.reduce((m, v) => Math.max(m, Math.abs(v)), 0) || 1;
    const signed = values.some((v) => v < 0);
    const tint = (v) => (signed ? iplDiv(v / maxAbs) : iplSeq(v / maxAbs));
    const legendSlot = iplEl("div", "ipl-controls");
    const drawLegend = () => legendSlot.replaceChildren(
      signed ? iplLegend(iplDiv, -maxAbs, maxAbs, "token colour: activation", true) : iplLegend(iplSeq, 0, maxAbs, "token colour: activation", false),
      iplEl("span", "ipl-muted", "outlined: each context's peak token"),
    );

    const list = iplEl("div", "ipl-contexts");
    list.appendChild(iplEl("div", "ipl-subtitle", "top-activating contexts"));
    const rows = [];
    let offset = 0;
    lengths.forEach((n, c) => {
      const row = iplEl("div", "ipl-context");
      row.dataset.context = String(c);
      row.tabIndex = 0;
      row.setAttribute("role", "option");
      let peak = offset;
      for (let i = offset; i < offset + n; i++) if (values[i] > values[peak]) peak = i;
      row.appendChild(iplEl("span", "ipl-ctx-max ipl-muted", n ? iplFmt(values[peak]) : "-"));
      const text = iplEl("span", "ipl-tokens");
      for (let i = offset; i < offset + n; i++) {
        const span = iplEl("span", "ipl-token", iplTokenText(tokens[i]));
        span.dataset.index = String(i);
        if (i === peak) span.classList.add("ipl-peak");
        text.appendChild(span);
      }
      row.appendChild(text);
      row.addEventListener("click", () => setSelected(c));
      row.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          setSelected(c);
        } else if (event.key === "Escape") {
          event.preventDefault();
          setSelected(-1);
        } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
          event.preventDefault();
          rows[Math.max(0, Math.min(rows.length - 1, c + (event.key === "ArrowDown" ? 1 : -1)))].row.focus();
        }
      });
      list.appendChild(row);
      rows.push({ row, start: offset, peak });
      offset += n;
    });
    list.setAttribute("role", "listbox");
    list.addEventListener("mouseover", (event) => {
      const span = event.target.closest(".ipl-token");
      if (!span) return;
      const i = Number(span.dataset.index);
      tooltip.show([iplQuote(tokens[i]), `activation ${iplFmt(values[i])}`], event);
    });
    list.addEventListener("mouseleave", () => tooltip.hide());
    const readout = iplEl("div", "ipl-readout ipl-muted");
    const clear = iplClearButton(() => setSelected(-1));
    const footer = iplEl("div", "ipl-controls");
    footer.append(readout, clear);
    function setSelected(c) {
      model.set("selected_context", c);
      model.save_changes();
    }
    function paint() {
      drawLegend();
      for (const span of list.querySelectorAll(".ipl-token")) iplTint(span, tint(values[Number(span.dataset.index)]));
    }

    const side = iplEl("div", "ipl-side");
    const counts = Array.from(iplFloats(model.get("hist_counts"), "float32"));
    const edges = Array.from(iplFloats(model.get("hist_edges"), "float32"));
    side.appendChild(featHistogram(counts, edges, model.get("density"), model.get("sample_signed"), tooltip));
    if (model.get("density") >= 0) side.appendChild(iplEl("div", "ipl-muted ipl-density", featDensityText(model.get("density"), model.get("sample_signed"))));
    const promoted = model.get("promoted_tokens");
    if (promoted.length) {
      side.appendChild(featLogits("promoted tokens (logit effect)", promoted, iplFloats(model.get("promoted_values"), "float32"), 1));
      side.appendChild(featLogits("suppressed tokens", model.get("suppressed_tokens"), iplFloats(model.get("suppressed_values"), "float32"), -1));
    }

    const body = iplEl("div", "ipl-feature-body");
    const left = iplEl("div", "ipl-feature-left");
    left.append(list, footer);
    body.append(left, side);
    root.append(head, legendSlot, body);

    function select() {
      const c = model.get("selected_context");
      rows.forEach((r, i) => {
        r.row.classList.toggle("ipl-selected", i === c);
        r.row.setAttribute("aria-selected", String(i === c));
      });
      clear.hidden = !(c >= 0 && c < rows.length);
      if (c >= 0 && c < rows.length) {
        const { start, peak } = rows[c];
        readout.textContent = `context ${c}: peak ${iplFmt(values[peak])} at token ${peak - start} ${iplQuote(tokens[peak])}`;
      } else {
        readout.textContent = "Click a context (or Enter on a focused one) to select it.";
      }
    }
    paint();
    select();
    const offSel = iplWatch(model, ["selected_context"], select);
    const offTheme = iplOnTheme(paint);
    return () => {
      offSel();
      offTheme();
    };
  },
};
