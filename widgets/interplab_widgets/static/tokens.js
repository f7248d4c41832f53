// TokenView: tokens coloured by the selected value series. Traits: tokens,
// shape [S, T], values (bytes), dtype, series_names, selected_series, title.

export default {
  render({ model, el }) {
    const root = iplEl("div", "ipl-root ipl-tokenview");
    el.replaceChildren(root);
    const tokens = model.get("tokens");
    const names = model.get("series_names");
    let values;
    let T;
    const load = () => {
      T = model.get("shape")[1];
      values = iplFloats(model.get("values"), model.get("dtype"));
    };
    load();

    const title = iplEl("div", "ipl-title", model.get("title") || `${tokens.length} tokens`);
    const select = iplEl("select", "ipl-series");
    names.forEach((name, i) => {
      const opt = iplEl("option", "", name);
      opt.value = String(i);
      select.appendChild(opt);
    });
    select.hidden = names.length < 2;
    const legendSlot = iplEl("span");
    const controls = iplEl("div", "ipl-controls");
    controls.append(select, legendSlot);
    const text = iplEl("div", "ipl-tokens");
    const spans = tokens.map((tok, i) => {
      const span = iplEl("span", "ipl-token", iplTokenText(tok));
      span.dataset.index = String(i);
      text.appendChild(span);
      return span;
    });
    const readout = iplEl("div", "ipl-readout ipl-muted", "Hover a token to see its value.");
    root.append(title, controls, text, readout);
    const tooltip = iplTooltip(root);

    const series = () => model.get("selected_series");
    const value = (i) => values[series() * T + i];

    function paint() {
      const s = series();
      select.value = String(s);
      let lo = Infinity;
      let hi = -Infinity;
      for (let i = 0; i < T; i++) {
        const v = values[s * T + i];
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      const signed = lo < 0;
      const vmax = Math.max(Math.abs(lo), Math.abs(hi)) || 1;
      for (let i = 0; i < T; i++) {
        const v = values[s * T + i];
        iplTint(spans[i], signed ? iplDiv(v / vmax) : iplSeq(v / vmax));
      }
      legendSlot.replaceChildren(
        signed ? iplLegend(iplDiv, -vmax, vmax, names[s], true) : iplLegend(iplSeq, 0, vmax, names[s], false),
      );
    }

    text.addEventListener("mouseover", (event) => {
      const span = event.target.closest(".ipl-token");
      if (!span) return;
      const i = Number(span.dataset.index);
      spans.forEach((sp, j) => sp.classList.toggle("ipl-active", j === i));
      const line = `${names[series()]} at ${i} "${tokens[i]}": ${iplFmt(value(i))}`;
      readout.textContent = line;
      tooltip.show([`"${tokens[i]}" (${i})`, `${names[series()]}: ${iplFmt(value(i))}`], event);
    });
    text.addEventListener("mouseleave", () => {
      tooltip.hide();
      spans.forEach((sp) => sp.classList.remove("ipl-active"));
    });
    select.addEventListener("change", () => {
      model.set("selected_series", Number(select.value));
      model.save_changes();
    });

    paint();
    const offSel = iplWatch(model, ["selected_series"], paint);
    const offData = iplWatch(model, ["values", "shape", "dtype"], () => {
      load();
      paint();
    });
    return () => {
      offSel();
      offData();
    };
  },
};
