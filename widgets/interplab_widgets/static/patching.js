// PatchingHeatmap: values [rows, cols] on a red-white-blue scale centred at 0.
// Traits: shape, values (bytes), dtype, row_labels, col_labels, row_title,
// col_title, title, quantity, vmax, selected ([row, col] or null; set on click,
// Enter; cleared by Escape or the clear button).

const PATCH_MAX_LABELS = 64; // beyond this, axis labels only appear in the tooltip
const PATCH_MAX_CELL = 64; // px; small grids get big cells...
const PATCH_VALUE_CELL = 36; // ...and from this size on, the value printed in each

export default {
  render({ model, el }) {
    const root = iplEl("div", "ipl-root ipl-patching");
    el.replaceChildren(root);
    let rows;
    let cols;
    let values;
    let cell;
    const load = () => {
      [rows, cols] = model.get("shape");
      values = iplFloats(model.get("values"), model.get("dtype"));
      cell = Math.max(4, Math.min(PATCH_MAX_CELL, Math.floor(640 / Math.max(cols, 1)), Math.floor(480 / Math.max(rows, 1))));
    };
    load();
    const rowLabels = () => model.get("row_labels");
    const colLabels = () => model.get("col_labels");
    const quantity = () => model.get("quantity") || "value";
    const vmax = () => model.get("vmax") || 1;
    const clipped = (v) => Math.abs(v) > vmax() * (1 + 1e-6);

    const title = iplEl("div", "ipl-title", model.get("title") || `${model.get("row_title")} x ${model.get("col_title")}`);
    const legendSlot = iplEl("span");
    const clipNote = iplEl("span", "ipl-muted ipl-clip-note");
    const status = iplEl("span", "ipl-selection ipl-muted");
    const clear = iplClearButton(() => setSelected(null));
    const controls = iplEl("div", "ipl-controls");
    controls.append(legendSlot, clipNote, status, clear);

    const canvas = iplEl("canvas", "ipl-heat");
    const overlay = iplEl("div", "ipl-marker");
    const cursor = iplEl("div", "ipl-cursor");
    cursor.hidden = true;
    const texts = iplEl("div", "ipl-values");
    const plot = iplEl("div", "ipl-plot");
    plot.tabIndex = 0;
    plot.setAttribute("role", "grid");
    plot.setAttribute("aria-label", "heatmap; arrow keys move, Enter selects, Escape clears the selection");
    plot.append(canvas, texts, overlay, cursor);
    const yAxis = iplEl("div", "ipl-yaxis");
    const xAxis = iplEl("div", "ipl-xaxis");
    const body = iplEl("div", "ipl-body");
    body.append(
      iplEl("div", "ipl-axis-title ipl-ytitle", model.get("row_title")), yAxis, plot,
      iplEl("div"), iplEl("div"), xAxis,
      iplEl("div"), iplEl("div"), iplEl("div", "ipl-axis-title ipl-xtitle", model.get("col_title")),
    );
    const scroller = iplEl("div", "ipl-scroll");
    scroller.appendChild(body);
    root.append(title, controls, scroller);
    const tooltip = iplTooltip(root);
    let focus = null; // keyboard cursor [r, c]

    const fmtCell = (v) => `${clipped(v) ? (v > 0 ? "\u25b2" : "\u25bc") : ""}${iplFmt(v)}`;

    function draw() {
      canvas.width = cols;
      canvas.height = rows;
      canvas.style.width = `${cols * cell}px`;
      canvas.style.height = `${rows * cell}px`;
      const ctx = canvas.getContext("2d");
      const img = ctx.createImageData(cols, rows);
      const lut = iplLut(iplDiv, true);
      const vm = vmax();
      let nClipped = 0;
      for (let i = 0; i < rows * cols; i++) {
        const t = Math.max(-1, Math.min(1, values[i] / vm));
        if (clipped(values[i])) nClipped++;
        const j = Math.round((t + 1) * 127.5) * 3;
        img.data.set([lut[j], lut[j + 1], lut[j + 2], 255], i * 4);
      }
      ctx.putImageData(img, 0, 0);
      const anyClipped = nClipped > 0;
      legendSlot.replaceChildren(iplLegend(iplDiv, -vm, vm, quantity(), true,
        anyClipped ? `\u2264 ${iplFmt(-vm)}` : undefined, anyClipped ? `\u2265 ${iplFmt(vm)}` : undefined));
      clipNote.textContent = anyClipped ? `\u25b2\u25bc ${nClipped} cell(s) beyond \u00b1${iplFmt(vm)}, colour clipped` : "";

      // Values in each cell when cells are big enough; otherwise only clipped cells get a mark.
      const showValues = cell >= PATCH_VALUE_CELL;
      const marks = [];
      for (let r = 0; r < rows && (showValues || cell >= 8); r++) {
        for (let c = 0; c < cols; c++) {
          const v = values[r * cols + c];
          if (!showValues && !clipped(v)) continue;
          const t = iplEl("div", showValues ? "ipl-value" : "ipl-clip-mark", showValues ? fmtCell(v) : v > 0 ? "\u25b2" : "\u25bc");
          t.style.left = `${c * cell}px`;
          t.style.top = `${r * cell}px`;
          t.style.width = t.style.height = t.style.lineHeight = `${cell}px`;
          t.style.color = iplInk(iplDiv(Math.max(-1, Math.min(1, v / vm))));
          if (clipped(v)) t.classList.add("ipl-clipped");
          marks.push(t);
        }
      }
      texts.replaceChildren(...marks);
      texts.style.fontSize = `${Math.min(12, Math.max(9, Math.floor(cell / 5)))}px`;

      yAxis.style.height = `${rows * cell}px`;
      yAxis.replaceChildren(...(rows <= PATCH_MAX_LABELS ? rowLabels().map((l) => {
        const lab = iplEl("div", "ipl-ylabel", iplTokenText(l));
        lab.title = l;
        lab.style.height = `${cell}px`;
        lab.style.lineHeight = `${cell}px`;
        return lab;
      }) : []));
      const horizontal = cell >= 40;
      xAxis.classList.toggle("ipl-xaxis-flat", horizontal);
      xAxis.replaceChildren(...(cols <= PATCH_MAX_LABELS ? colLabels().map((l) => {
        const lab = iplEl("div", "ipl-xlabel", iplTokenText(l));
        lab.title = l;
        lab.style.width = `${cell}px`;
        lab.style.minWidth = `${cell}px`;
        return lab;
      }) : []));
      mark();
    }

    function mark() {
      const sel = model.get("selected");
      clear.hidden = !sel;
      if (!sel) {
        overlay.hidden = true;
        status.textContent = "Click a cell (or Enter on the focused one) to select it.";
        return;
      }
      const [r, c] = sel;
      overlay.hidden = false;
      overlay.style.left = `${c * cell}px`;
      overlay.style.top = `${r * cell}px`;
      overlay.style.width = `${cell}px`;
      overlay.style.height = `${cell}px`;
      status.textContent = `selected ${model.get("row_title")} ${rowLabels()[r]}, ${model.get("col_title")} ${colLabels()[c]}: ${quantity()} ${iplFmt(values[r * cols + c])}`;
    }

    function setSelected(rc) {
      model.set("selected", rc);
      model.save_changes();
    }

    const describe = (r, c) => {
      const v = values[r * cols + c];
      return [
        `${model.get("row_title")}: ${rowLabels()[r]}`,
        `${model.get("col_title")}: ${colLabels()[c]}`,
        `${quantity()}: ${iplFmt(v)}${clipped(v) ? ` (beyond \u00b1${iplFmt(vmax())}: colour clipped)` : ""}`,
      ];
    };

    const cellAt = (event) => {
      const box = canvas.getBoundingClientRect();
      const r = Math.floor(((event.clientY - box.top) / box.height) * rows);
      const c = Math.floor(((event.clientX - box.left) / box.width) * cols);
      return r >= 0 && r < rows && c >= 0 && c < cols ? [r, c] : null;
    };
    canvas.addEventListener("mousemove", (event) => {
      const rc = cellAt(event);
      if (!rc) return tooltip.hide();
      tooltip.show(describe(...rc), event);
    });
    canvas.addEventListener("mouseleave", () => tooltip.hide());
    canvas.addEventListener("click", (event) => {
      const rc = cellAt(event);
      if (rc) setSelected(rc);
    });

    function moveCursor(rc) {
      focus = rc;
      cursor.hidden = !rc;
      if (!rc) return tooltip.hide();
      const [r, c] = rc;
      cursor.style.left = `${c * cell}px`;
      cursor.style.top = `${r * cell}px`;
      cursor.style.width = cursor.style.height = `${cell}px`;
      const box = canvas.getBoundingClientRect();
      tooltip.show(describe(r, c), { clientX: box.left + (c + 1) * cell, clientY: box.top + (r + 1) * cell });
    }
    plot.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        setSelected(null);
        return moveCursor(null);
      }
      if ((event.key === "Enter" || event.key === " ") && focus) {
        event.preventDefault();
        return setSelected(focus);
      }
      const start = focus ?? model.get("selected") ?? [0, 0];
      const next = iplArrow(event, start[0], start[1], rows, cols);
      if (next) moveCursor(focus ? next : start);
    });
    plot.addEventListener("blur", () => moveCursor(null));

    draw();
    const offSel = iplWatch(model, ["selected"], mark);
    const offData = iplWatch(model, ["values", "shape", "dtype", "vmax", "row_labels", "col_labels", "quantity"], () => {
      load();
      draw();
    });
    const offTheme = iplOnTheme(draw);
    return () => {
      offSel();
      offData();
      offTheme();
    };
  },
};
