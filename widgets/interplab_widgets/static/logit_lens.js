// LogitLensView: a layers x positions table; each cell shows the top-1
// prediction, tinted by probability; the target token's rank is marked.
// Traits: tokens, layer_labels, shape [L,P,k], strings, top_index (int32),
// top_probs, target_tokens, target_probs, target_ranks (int32), color_by,
// selected ([layer, position] or null), title.

export default {
  render({ model, el }) {
    const root = iplEl("div", "ipl-root ipl-logitlens");
    el.replaceChildren(root);
    const tokens = model.get("tokens");
    const layers = model.get("layer_labels");
    const [L, P, K] = model.get("shape");
    const strings = model.get("strings");
    const index = iplInts(model.get("top_index"));
    const probs = iplFloats(model.get("top_probs"), "float32");
    const targets = model.get("target_tokens");
    const hasTarget = targets.length > 0;
    const tProbs = hasTarget ? iplFloats(model.get("target_probs"), "float32") : null;
    const tRanks = hasTarget ? iplInts(model.get("target_ranks")) : null;

    const title = iplEl("div", "ipl-title", model.get("title") || `Logit lens: ${L} layers x ${P} positions`);
    const colorSelect = iplEl("select", "ipl-colorby");
    for (const [value, text] of [["top", "colour: top-1 probability"], ["target", "colour: target probability"]]) {
      const opt = iplEl("option", "", text);
      opt.value = value;
      opt.disabled = value === "target" && !hasTarget;
      colorSelect.appendChild(opt);
    }
    const controls = iplEl("div", "ipl-controls");
    controls.append(colorSelect, iplLegend(iplSeq, 0, 1, "p", false));
    if (hasTarget) controls.append(iplEl("span", "ipl-muted", "outlined: target is top-1; #r: target's rank"));

    const table = iplEl("table", "ipl-lens");
    table.tabIndex = 0;
    table.setAttribute("aria-label", "logit lens; arrow keys move, Enter pins a cell, Escape clears");
    const head = iplEl("tr", "ipl-head");
    const corner = iplEl("th", "ipl-corner", "layer");
    corner.title = "rows: layer; columns: input token at each position";
    head.append(corner, ...tokens.map((t, p) => {
      const th = iplEl("th", "ipl-input", iplTokenText(t));
      th.title = `position ${p}: ${iplQuote(t)}`;
      return th;
    }));
    table.appendChild(head);
    const cells = [];
    for (let l = 0; l < L; l++) {
      const tr = iplEl("tr");
      tr.appendChild(iplEl("th", "ipl-layer", layers[l]));
      for (let p = 0; p < P; p++) {
        const i = l * P + p;
        const td = iplEl("td", "ipl-cell");
        td.dataset.layer = String(l);
        td.dataset.pos = String(p);
        td.appendChild(iplEl("span", "ipl-pred", iplTokenText(strings[index[i * K]])));
        if (hasTarget) {
          if (tRanks[i] === 0) td.classList.add("ipl-hit");
          else td.appendChild(iplEl("span", "ipl-rank", `#${tRanks[i] + 1}`));
        }
        tr.appendChild(td);
        cells.push(td);
      }
      table.appendChild(tr);
    }
    if (hasTarget) {
      const foot = iplEl("tr", "ipl-targets");
      foot.append(iplEl("th", "ipl-layer", "target"), ...targets.map((t) => {
        const th = iplEl("th", "ipl-target", iplTokenText(t));
        th.title = `target ${iplQuote(t)}`;
        return th;
      }));
      table.appendChild(foot);
    }
    const scroller = iplEl("div", "ipl-scroll");
    scroller.appendChild(table);
    const detail = iplEl("div", "ipl-detail ipl-muted");
    const clear = iplClearButton(() => setPinned(null));
    const footer = iplEl("div", "ipl-controls");
    footer.append(detail, clear);
    root.append(title, controls, scroller, footer);
    const tooltip = iplTooltip(root);
    let cursor = null; // keyboard position [l, p]

    const describe = (l, p) => {
      const i = l * P + p;
      const lines = [`layer ${layers[l]}, position ${p} ${iplQuote(tokens[p])}`];
      for (let j = 0; j < K; j++) lines.push(`${j + 1}. ${iplQuote(strings[index[i * K + j]])} ${iplFmt(probs[i * K + j])}`);
      if (hasTarget) lines.push(`target ${iplQuote(targets[p])}: rank ${tRanks[i] + 1}, p ${iplFmt(tProbs[i])}`);
      return lines;
    };

    function paint() {
      const mode = model.get("color_by") === "target" && hasTarget ? "target" : "top";
      colorSelect.value = mode;
      for (let i = 0; i < L * P; i++) iplTint(cells[i], iplSeq(mode === "target" ? tProbs[i] : probs[i * K]));
      controls.replaceChild(iplLegend(iplSeq, 0, 1, "p", false), controls.querySelector(".ipl-legend"));
    }

    function pin() {
      const sel = model.get("selected");
      cells.forEach((c) => c.classList.remove("ipl-pinned"));
      clear.hidden = !sel;
      if (!sel) {
        detail.textContent = "Click a cell (or Enter on the focused table) to pin its top predictions.";
        return;
      }
      const [l, p] = sel;
      cells[l * P + p].classList.add("ipl-pinned");
      detail.replaceChildren(...describe(l, p).map((line) => iplEl("div", "", line)));
    }

    function setPinned(lp) {
      model.set("selected", lp);
      model.save_changes();
    }

    function moveCursor(lp) {
      cells.forEach((c) => c.classList.remove("ipl-cursor"));
      cursor = lp;
      if (!lp) return tooltip.hide();
      const td = cells[lp[0] * P + lp[1]];
      td.classList.add("ipl-cursor");
      td.scrollIntoView?.({ block: "nearest", inline: "nearest" });
      tooltip.show(describe(lp[0], lp[1]), td.getBoundingClientRect());
    }

    // Fit the table to the output width: cells shrink (down to 32 px, text cut with an
    // ellipsis, full text in the tooltip), and only past that does the table scroll,
    // with the layer column and the input row kept in view.
    function fit() {
      const avail = scroller.clientWidth;
      if (!avail) return;
      const first = table.querySelector("th.ipl-layer");
      const layerWidth = first ? first.getBoundingClientRect().width : 40;
      const perCell = Math.floor((avail - layerWidth - 4) / Math.max(P, 1)) - 10; // padding and border
      table.style.setProperty("--ipl-cell-max", `${Math.max(32, Math.min(90, perCell))}px`);
    }
    const resize = typeof ResizeObserver === "undefined" ? null : new ResizeObserver(fit);
    resize?.observe(scroller);
    fit();

    table.addEventListener("mouseover", (event) => {
      const td = event.target.closest(".ipl-cell");
      if (!td) return tooltip.hide();
      tooltip.show(describe(Number(td.dataset.layer), Number(td.dataset.pos)), event);
    });
    table.addEventListener("mouseleave", () => tooltip.hide());
    table.addEventListener("click", (event) => {
      const td = event.target.closest(".ipl-cell");
      if (!td) return;
      setPinned([Number(td.dataset.layer), Number(td.dataset.pos)]);
    });
    table.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        setPinned(null);
        return moveCursor(null);
      }
      if ((event.key === "Enter" || event.key === " ") && cursor) {
        event.preventDefault();
        return setPinned(cursor);
      }
      const start = cursor ?? model.get("selected") ?? [0, 0];
      const next = iplArrow(event, start[0], start[1], L, P);
      if (next) moveCursor(cursor ? next : start);
    });
    table.addEventListener("blur", () => moveCursor(null));
    colorSelect.addEventListener("change", () => {
      model.set("color_by", colorSelect.value);
      model.save_changes();
    });

    paint();
    pin();
    const offColor = iplWatch(model, ["color_by"], paint);
    const offSel = iplWatch(model, ["selected"], pin);
    const offTheme = iplOnTheme(paint);
    return () => {
      offColor();
      offSel();
      offTheme();
      resize?.disconnect();
    };
  },
};
