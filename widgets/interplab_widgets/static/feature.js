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

function featHistogram(counts, edges, density, tooltip) {
  const wrap = iplEl("div", "ipl-hist");
  const caption = density >= 0 ? `activation histogram (non-zero density ${iplFmt(density)})` : "activation histogram";
  wrap.appendChild(iplEl("div", "ipl-subtitle", caption));
  if (counts.length === 0) {
    wrap.appendChild(iplEl("div", "ipl-muted", density >= 0 ? "no non-zero activations in the sample" : "no sample given"));
    return wrap;
  }
  const W = 280;
  const H = 90;
  const svg = featSvg("svg", { width: W, height: H + 14, class: "ipl-hist-svg" });
  const cmax = Math.max(...counts) || 1;
  const bw = W / counts.length;
  counts.forEach((c, i) => {
    const h = (c / cmax) * H;
    const bar = featSvg("rect", { x: i * bw, y: H - h, width: Math.max(1, bw - 1), height: Math.max(h, 0.5), class: "ipl-bar" });
    bar.dataset.bin = String(i);
    bar.addEventListener("mousemove", (event) => tooltip.show([`[${iplFmt(edges[i])}, ${iplFmt(edges[i + 1])})`, `count ${c}`], event));
    bar.addEventListener("mouseleave", () => tooltip.hide());
    svg.appendChild(bar);
  });
  const lo = featSvg("text", { x: 0, y: H + 12, class: "ipl-axis" });
  lo.textContent = iplFmt(edges[0]);
  const hi = featSvg("text", { x: W, y: H + 12, "text-anchor": "end", class: "ipl-axis" });
  hi.textContent = iplFmt(edges[edges.length - 1]);
  svg.append(lo, hi);
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

    const list = iplEl("div", "ipl-contexts");
    list.appendChild(iplEl("div", "ipl-subtitle", "top-activating contexts"));
    const rows = [];
    let offset = 0;
    lengths.forEach((n, c) => {
      const row = iplEl("div", "ipl-context");
      row.dataset.context = String(c);
      let peak = offset;
      for (let i = offset; i < offset + n; i++) if (values[i] > values[peak]) peak = i;
      row.appendChild(iplEl("span", "ipl-ctx-max ipl-muted", n ? iplFmt(values[peak]) : "-"));
      const text = iplEl("span", "ipl-tokens");
      for (let i = offset; i < offset + n; i++) {
        const span = iplEl("span", "ipl-token", iplTokenText(tokens[i]));
        span.dataset.index = String(i);
        iplTint(span, signed ? iplDiv(values[i] / maxAbs) : iplSeq(values[i] / maxAbs));
        if (i === peak) span.classList.add("ipl-peak");
        text.appendChild(span);
      }
      row.appendChild(text);
      row.addEventListener("click", () => {
        model.set("selected_context", c);
        model.save_changes();
      });
      list.appendChild(row);
      rows.push({ row, start: offset, peak });
      offset += n;
    });
    list.addEventListener("mouseover", (event) => {
      const span = event.target.closest(".ipl-token");
      if (!span) return;
      const i = Number(span.dataset.index);
      tooltip.show([`"${tokens[i]}"`, `activation ${iplFmt(values[i])}`], event);
    });
    list.addEventListener("mouseleave", () => tooltip.hide());
    const readout = iplEl("div", "ipl-readout ipl-muted", "Click a context to select it.");

    const side = iplEl("div", "ipl-side");
    const counts = Array.from(iplFloats(model.get("hist_counts"), "float32"));
    const edges = Array.from(iplFloats(model.get("hist_edges"), "float32"));
    side.appendChild(featHistogram(counts, edges, model.get("density"), tooltip));
    const promoted = model.get("promoted_tokens");
    if (promoted.length) {
      side.appendChild(featLogits("promoted tokens (logit effect)", promoted, iplFloats(model.get("promoted_values"), "float32"), 1));
      side.appendChild(featLogits("suppressed tokens", model.get("suppressed_tokens"), iplFloats(model.get("suppressed_values"), "float32"), -1));
    }

    const body = iplEl("div", "ipl-feature-body");
    const left = iplEl("div", "ipl-feature-left");
    left.append(list, readout);
    body.append(left, side);
    root.append(head, body);

    function select() {
      const c = model.get("selected_context");
      rows.forEach((r, i) => r.row.classList.toggle("ipl-selected", i === c));
      if (c >= 0 && c < rows.length) {
        const { start, peak } = rows[c];
        readout.textContent = `context ${c}: peak ${iplFmt(values[peak])} at token ${peak - start} "${tokens[peak]}"`;
      } else {
        readout.textContent = "Click a context to select it.";
      }
    }
    select();
    return iplWatch(model, ["selected_context"], select);
  },
};
