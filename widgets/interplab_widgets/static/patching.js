// PatchingHeatmap: values [rows, cols] on a red-white-blue scale centred at 0.
// Traits: shape, values (bytes), dtype, row_labels, col_labels, row_title,
// col_title, title, vmax, selected ([row, col] or null; set on click).

const PATCH_MAX_LABELS = 64; // beyond this, axis labels only appear in the tooltip

export default {
  render({ model, el }) {
    const root = iplEl("div", "ipl-root ipl-patching");
    el.replaceChildren(root);
    let rows;
    let cols;
    let values;
    const load = () => {
      [rows, cols] = model.get("shape");
      values = iplFloats(model.get("values"), model.get("dtype"));
    };
    load();
    const rowLabels = () => model.get("row_labels");
    const colLabels = () => model.get("col_labels");

    const cell = Math.max(4, Math.min(28, Math.floor(640 / Math.max(cols, 1)), Math.floor(480 / Math.max(rows, 1))));
    const title = iplEl("div", "ipl-title", model.get("title") || `${model.get("row_title")} x ${model.get("col_title")}`);
    const legendSlot = iplEl("span");
    const status = iplEl("span", "ipl-selection ipl-muted", "Click a cell to select it.");
    const controls = iplEl("div", "ipl-controls");
    controls.append(legendSlot, status);

    const canvas = iplEl("canvas", "ipl-heat");
    const overlay = iplEl("div", "ipl-marker");
    const plot = iplEl("div", "ipl-plot");
    plot.append(canvas, overlay);
    const yAxis = iplEl("div", "ipl-yaxis");
    const xAxis = iplEl("div", "ipl-xaxis");
    const body = iplEl("div", "ipl-body");
    body.append(
      iplEl("div", "ipl-axis-title ipl-ytitle", model.get("row_title")), yAxis, plot,
      iplEl("div"), iplEl("div"), xAxis,
      iplEl("div"), iplEl("div"), iplEl("div", "ipl-axis-title ipl-xtitle", model.get("col_title")),
    );
    root.append(title, controls, body);
    const tooltip = iplTooltip(root);

    function draw() {
      canvas.width = cols;
      canvas.height = rows;
      canvas.style.width = `${cols * cell}px`;
      canvas.style.height = `${rows * cell}px`;
      const ctx = canvas.getContext("2d");
      const img = ctx.createImageData(cols, rows);
      const lut = iplLut(iplDiv, true);
      const vmax = model.get("vmax") || 1;
      for (let i = 0; i < rows * cols; i++) {
        const t = Math.max(-1, Math.min(1, values[i] / vmax));
        const j = Math.round((t + 1) * 127.5) * 3;
        img.data.set([lut[j], lut[j + 1], lut[j + 2], 255], i * 4);
      }
      ctx.putImageData(img, 0, 0);
      legendSlot.replaceChildren(iplLegend(iplDiv, -vmax, vmax, "", true));
      yAxis.style.height = `${rows * cell}px`;
      yAxis.replaceChildren(...(rows <= PATCH_MAX_LABELS ? rowLabels().map((l) => {
        const lab = iplEl("div", "ipl-ylabel", iplTokenText(l));
        lab.style.height = `${cell}px`;
        lab.style.lineHeight = `${cell}px`;
        return lab;
      }) : []));
      xAxis.replaceChildren(...(cols <= PATCH_MAX_LABELS ? colLabels().map((l) => {
        const lab = iplEl("div", "ipl-xlabel", iplTokenText(l));
        lab.style.width = `${cell}px`;
        return lab;
      }) : []));
      mark();
    }

    function mark() {
      const sel = model.get("selected");
      if (!sel) {
        overlay.hidden = true;
        status.textContent = "Click a cell to select it.";
        return;
      }
      const [r, c] = sel;
      overlay.hidden = false;
      overlay.style.left = `${c * cell}px`;
      overlay.style.top = `${r * cell}px`;
      overlay.style.width = `${cell}px`;
      overlay.style.height = `${cell}px`;
      status.textContent = `selected ${model.get("row_title")} ${rowLabels()[r]}, ${model.get("col_title")} ${colLabels()[c]}: ${iplFmt(values[r * cols + c])}`;
    }

    const cellAt = (event) => {
      const box = canvas.getBoundingClientRect();
      const r = Math.floor(((event.clientY - box.top) / box.height) * rows);
      const c = Math.floor(((event.clientX - box.left) / box.width) * cols);
      return r >= 0 && r < rows && c >= 0 && c < cols ? [r, c] : null;
    };
    canvas.addEventListener("mousemove", (event) => {
      const rc = cellAt(event);
      if (!rc) return tooltip.hide();
      const [r, c] = rc;
      tooltip.show([
        `${model.get("row_title")}: ${rowLabels()[r]}`,
        `${model.get("col_title")}: ${colLabels()[c]}`,
        `value: ${iplFmt(values[r * cols + c])}`,
      ], event);
    });
    canvas.addEventListener("mouseleave", () => tooltip.hide());
    canvas.addEventListener("click", (event) => {
      const rc = cellAt(event);
      if (!rc) return;
      model.set("selected", rc);
      model.save_changes();
    });

    draw();
    const offSel = iplWatch(model, ["selected"], mark);
    const offData = iplWatch(model, ["values", "shape", "dtype", "vmax", "row_labels", "col_labels"], () => {
      load();
      draw();
    });
    return () => {
      offSel();
      offData();
    };
  },
};
