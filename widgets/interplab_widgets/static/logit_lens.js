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
    const head = iplEl("tr");
    head.append(iplEl("th", "", "layer \\ input"), ...tokens.map((t) => iplEl("th", "ipl-input", iplTokenText(t))));
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
      foot.append(iplEl("th", "", "target"), ...targets.map((t) => iplEl("th", "ipl-target", iplTokenText(t))));
      table.appendChild(foot);
    }
    const scroller = iplEl("div", "ipl-scroll");
    scroller.appendChild(table);
    const detail = iplEl("div", "ipl-detail ipl-muted", "Click a cell to pin its top predictions.");
    root.append(title, controls, scroller, detail);
    const tooltip = iplTooltip(root);

    const describe = (l, p) => {
      const i = l * P + p;
      const lines = [`layer ${layers[l]}, position ${p} "${tokens[p]}"`];
      for (let j = 0; j < K; j++) lines.push(`${j + 1}. "${strings[index[i * K + j]]}" ${iplFmt(probs[i * K + j])}`);
      if (hasTarget) lines.push(`target "${targets[p]}": rank ${tRanks[i] + 1}, p ${iplFmt(tProbs[i])}`);
      return lines;
    };

    function paint() {
      const mode = model.get("color_by") === "target" && hasTarget ? "target" : "top";
      colorSelect.value = mode;
      for (let i = 0; i < L * P; i++) iplTint(cells[i], iplSeq(mode === "target" ? tProbs[i] : probs[i * K]));
    }

    function pin() {
      const sel = model.get("selected");
      cells.forEach((c) => c.classList.remove("ipl-pinned"));
      if (!sel) {
        detail.textContent = "Click a cell to pin its top predictions.";
        return;
      }
      const [l, p] = sel;
      cells[l * P + p].classList.add("ipl-pinned");
      detail.replaceChildren(...describe(l, p).map((line) => iplEl("div", "", line)));
    }

    table.addEventListener("mouseover", (event) => {
      const td = event.target.closest(".ipl-cell");
      if (!td) return tooltip.hide();
      tooltip.show(describe(Number(td.dataset.layer), Number(td.dataset.pos)), event);
    });
    table.addEventListener("mouseleave", () => tooltip.hide());
    table.addEventListener("click", (event) => {
      const td = event.target.closest(".ipl-cell");
      if (!td) return;
      model.set("selected", [Number(td.dataset.layer), Number(td.dataset.pos)]);
      model.save_changes();
    });
    colorSelect.addEventListener("change", () => {
      model.set("color_by", colorSelect.value);
      model.save_changes();
    });

    paint();
    pin();
    const offColor = iplWatch(model, ["color_by"], paint);
    const offSel = iplWatch(model, ["selected"], pin);
    return () => {
      offColor();
      offSel();
    };
  },
};
