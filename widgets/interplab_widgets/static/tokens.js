// TokenView: tokens coloured by the selected value series. Traits: tokens,
// shape [S, T], values (bytes; NaN = no value, drawn grey), dtype,
// series_names, selected_series, title.

export default {
  render({ model, el }) {
    const root = iplEl("div", "ipl-root ipl-tokenview");
    el.replaceChildren(root);
    const tokens = model.get("tokens");
    let names = model.get("series_names");
    let values;
    let T;
    const load = () => {
      T = model.get("shape")[1];
      values = iplFloats(model.get("values"), model.get("dtype"));
      names = model.get("series_names");
    };
    load();

    const title = iplEl("div", "ipl-title", model.get("title") || `${tokens.length} tokens`);
    const select = iplEl("select", "ipl-series");
    select.setAttribute("aria-label", "value series");
    const fillSelect = () => {
      select.replaceChildren(...names.map((name, i) => {
        const opt = iplEl("option", "", name);
        opt.value = String(i);
        return opt;
      }));
      select.hidden = names.length < 2;
    };
    fillSelect();
    const legendSlot = iplEl("span");
    const noValue = iplEl("span", "ipl-muted ipl-novalue-note");
    const controls = iplEl("div", "ipl-controls");
    controls.append(select, legendSlot, noValue);
    const text = iplEl("div", "ipl-tokens");
    text.tabIndex = 0;
    text.setAttribute("aria-label", "tokens; left and right arrows move, Escape leaves");
    const spans = tokens.map((tok, i) => {
      const span = iplEl("span", "ipl-token", iplTokenText(tok));
      span.dataset.index = String(i);
      text.appendChild(span);
      return span;
    });
    const readout = iplEl("div", "ipl-readout ipl-muted");
    root.append(title, controls, text, readout);
    const tooltip = iplTooltip(root);
    let active = -1; // the hovered / keyboard-focused token

    const series = () => model.get("selected_series");
    const value = (i) => values[series() * T + i];
    const valueText = (v) => (Number.isNaN(v) ? "no value" : iplFmt(v));

    function showReadout() {
      spans.forEach((sp, j) => sp.classList.toggle("ipl-active", j === active));
      readout.textContent = active < 0 ? "Hover a token (or focus the text and use the arrow keys) to see its value."
        : `${names[series()]} at ${active} ${iplQuote(tokens[active])}: ${valueText(value(active))}`;
    }

    function paint() {
      const s = series();
      select.value = String(s);
      let lo = Infinity;
      let hi = -Infinity;
      let missing = 0;
      for (let i = 0; i < T; i++) {
        const v = values[s * T + i];
        if (Number.isNaN(v)) { missing++; continue; }
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      const signed = lo < 0;
      const vmax = Math.max(Math.abs(lo), Math.abs(hi)) || 1;
      const grey = iplMaskedRgb();
      for (let i = 0; i < T; i++) {
        const v = values[s * T + i];
        if (Number.isNaN(v)) {
          iplTint(spans[i], grey);
          spans[i].classList.add("ipl-novalue");
        } else {
          iplTint(spans[i], signed ? iplDiv(v / vmax) : iplSeq(v / vmax));
          spans[i].classList.remove("ipl-novalue");
        }
      }
      legendSlot.replaceChildren(
        signed ? iplLegend(iplDiv, -vmax, vmax, names[s], true) : iplLegend(iplSeq, 0, vmax, names[s], false),
      );
      if (missing) {
        const swatch = iplEl("span", "ipl-swatch");
        swatch.style.background = iplRgb(grey);
        noValue.replaceChildren(swatch, `grey: no value (${missing} token${missing > 1 ? "s" : ""})`);
      } else {
        noValue.replaceChildren();
      }
      showReadout(); // the readout follows the series too
    }

    function point(i, at) {
      active = i;
      showReadout();
      if (i < 0) return tooltip.hide();
      tooltip.show([`${iplQuote(tokens[i])} (${i})`, `${names[series()]}: ${valueText(value(i))}`], at);
    }

    text.addEventListener("mouseover", (event) => {
      const span = event.target.closest(".ipl-token");
      if (span) point(Number(span.dataset.index), event);
    });
    text.addEventListener("mouseleave", () => point(-1));
    text.addEventListener("blur", () => point(-1));
    text.addEventListener("keydown", (event) => {
      if (event.key === "Escape") return point(-1);
      const next = iplArrow(event, 0, Math.max(active, 0), 1, tokens.length);
      if (next) point(active < 0 ? 0 : next[1], spans[active < 0 ? 0 : next[1]].getBoundingClientRect());
    });
    select.addEventListener("change", () => {
      model.set("selected_series", Number(select.value));
      model.save_changes();
    });

    paint();
    const offSel = iplWatch(model, ["selected_series"], paint);
    const offData = iplWatch(model, ["values", "shape", "dtype", "series_names"], () => {
      load();
      fillSelect();
      paint();
    });
    const offTheme = iplOnTheme(paint);
    return () => {
      offSel();
      offData();
      offTheme();
    };
  },
};
