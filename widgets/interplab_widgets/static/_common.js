// Shared helpers, prepended by Python to every view's ESM (anywidget cannot
// resolve relative imports). Plain functions only; each view file has the one
// `export default`.

let IPL_F16_TABLE = null;

/** Float32Array view of a float32/float16 little-endian DataView (copied, so alignment is safe). */
function iplFloats(dv, dtype) {
  const bytes = new Uint8Array(dv.buffer, dv.byteOffset, dv.byteLength).slice();
  if (dtype === "float32") return new Float32Array(bytes.buffer);
  if (dtype !== "float16") throw new Error(`interplab: unknown dtype ${dtype}`);
  if (IPL_F16_TABLE === null) {
    IPL_F16_TABLE = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) {
      const sign = h & 0x8000 ? -1 : 1;
      const exp = (h >> 10) & 0x1f;
      const frac = h & 0x3ff;
      IPL_F16_TABLE[h] =
        exp === 0 ? sign * 2 ** -14 * (frac / 1024)
        : exp === 31 ? (frac ? NaN : sign * Infinity)
        : sign * 2 ** (exp - 15) * (1 + frac / 1024);
    }
  }
  const halves = new Uint16Array(bytes.buffer);
  const out = new Float32Array(halves.length);
  for (let i = 0; i < halves.length; i++) out[i] = IPL_F16_TABLE[halves[i]];
  return out;
}

/** Int32Array copy of a little-endian int32 DataView. */
function iplInts(dv) {
  return new Int32Array(new Uint8Array(dv.buffer, dv.byteOffset, dv.byteLength).slice().buffer);
}

function iplEl(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Token text with whitespace and control characters made visible, so " the" and "the" differ
 *  on screen and "\x00" is not invisible. Display only: the model keeps the exact string. */
function iplTokenText(tok) {
  return tok
    .replace(/\n/g, "\u21b5")
    .replace(/\t/g, "\u21e5")
    .replace(/ /g, "\u00a0")
    .replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
}

/** A token quoted for tooltips and readouts, escapes and all (JSON string syntax). */
function iplQuote(tok) {
  // JSON writes control characters as \u00XX; show them as \xXX, like iplTokenText does
  // (an odd run of backslashes is an escape, an even one an escaped backslash).
  return JSON.stringify(tok).replace(/(\\+)u00([0-9a-f]{2})/g, (m, bs, hex) => (bs.length % 2 ? `${bs}x${hex}` : m));
}

function iplFmt(v) {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e4)) return v.toExponential(2);
  return v.toFixed(a < 1 ? 3 : 2);
}

function iplLerp(stops, t) {
  const x = Math.min(1, Math.max(0, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  return [0, 1, 2].map((c) => Math.round(stops[i][c] + (stops[i + 1][c] - stops[i][c]) * f));
}

// White to blue (magnitudes: attention, activations) and red-white-blue (signed values).
// On a dark page the low end is the page's dark grey instead of white, so that
// "nothing" blends into the background and strong values stand out.
const IPL_BLUES = [[255, 255, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107]];
const IPL_REDS = [[255, 255, 255], [252, 187, 161], [251, 106, 74], [203, 24, 29], [103, 0, 13]];
const IPL_BLUES_DARK = [[28, 28, 28], [16, 60, 110], [33, 113, 181], [107, 174, 214], [222, 235, 247]];
const IPL_REDS_DARK = [[28, 28, 28], [110, 16, 20], [203, 24, 29], [251, 106, 74], [254, 224, 210]];

/** True in JupyterLab's dark themes and VS Code's dark themes. */
function iplIsDark() {
  const body = document.body;
  if (!body) return false;
  if (body.dataset.jpThemeLight === "false") return true;
  if (body.dataset.jpThemeLight === "true") return false;
  return body.classList.contains("vscode-dark") || body.classList.contains("vscode-high-contrast");
}

/** Call cb when the page switches between light and dark; returns a cleanup function. */
function iplOnTheme(cb) {
  if (!document.body || typeof MutationObserver === "undefined") return () => {};
  let dark = iplIsDark();
  const obs = new MutationObserver(() => {
    if (iplIsDark() !== dark) {
      dark = iplIsDark();
      cb();
    }
  });
  obs.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-light", "class"] });
  return () => obs.disconnect();
}

/** [r,g,b] for t in [0,1] on the sequential scale. */
function iplSeq(t) {
  return iplLerp(iplIsDark() ? IPL_BLUES_DARK : IPL_BLUES, t);
}

/** [r,g,b] for t in [-1,1]: negative red, zero white (dark grey on a dark page), positive blue. */
function iplDiv(t) {
  const dark = iplIsDark();
  return t < 0 ? iplLerp(dark ? IPL_REDS_DARK : IPL_REDS, -t) : iplLerp(dark ? IPL_BLUES_DARK : IPL_BLUES, t);
}

/** Colour of "no value" / causally masked cells. */
function iplMaskedRgb() {
  return iplIsDark() ? [64, 64, 64] : [236, 236, 236];
}

/** 256-entry RGB lookup table for fast per-pixel drawing. */
function iplLut(colorFn, signed) {
  const lut = new Uint8Array(256 * 3);
  for (let i = 0; i < 256; i++) {
    const t = signed ? (i / 255) * 2 - 1 : i / 255;
    lut.set(colorFn(t), i * 3);
  }
  return lut;
}

function iplRgb(c) {
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

/** Black or white text, whichever reads better on background c. */
function iplInk(c) {
  return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] > 150 ? "#111" : "#fff";
}

/** Paint a token span's background by colour c. */
function iplTint(node, c) {
  node.style.background = iplRgb(c);
  node.style.color = iplInk(c);
}

/** A floating tooltip owned by root; show() takes lines of text and an event (or a DOMRect to sit
 *  beside). It is position: fixed, so an output cell's overflow cannot cut it off, and it flips
 *  left / up to stay inside the viewport. */
function iplTooltip(root) {
  const tip = iplEl("div", "ipl-tooltip");
  tip.hidden = true;
  tip.setAttribute("role", "tooltip");
  root.appendChild(tip);
  return {
    node: tip,
    show(lines, at) {
      tip.replaceChildren(...lines.map((line) => iplEl("div", "", line)));
      tip.hidden = false;
      const x = at.clientX ?? at.right;
      const y = at.clientY ?? at.bottom;
      // A transformed or contained ancestor makes "fixed" relative to itself: measure that origin.
      tip.style.left = "0px";
      tip.style.top = "0px";
      const origin = tip.getBoundingClientRect();
      const vw = document.documentElement.clientWidth || window.innerWidth;
      const vh = document.documentElement.clientHeight || window.innerHeight;
      let left = x + 12;
      let top = y + 12;
      if (left + origin.width > vw - 4) left = Math.max(4, x - 12 - origin.width);
      if (top + origin.height > vh - 4) top = Math.max(4, y - 12 - origin.height);
      tip.style.left = `${left - origin.left}px`;
      tip.style.top = `${top - origin.top}px`;
    },
    hide() {
      tip.hidden = true;
    },
  };
}

/** Arrow keys move (r, c) inside rows x cols; returns the new position or null for other keys. */
function iplArrow(event, r, c, rows, cols) {
  const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1], Home: [0, -cols], End: [0, cols] };
  const m = moves[event.key];
  if (!m) return null;
  event.preventDefault();
  return [Math.min(rows - 1, Math.max(0, r + m[0])), Math.min(cols - 1, Math.max(0, c + m[1]))];
}

/** A small "clear" button for a selection. */
function iplClearButton(onClear) {
  const btn = iplEl("button", "ipl-clear", "clear selection");
  btn.type = "button";
  btn.addEventListener("click", onClear);
  return btn;
}

/** A gradient legend from lo to hi. */
function iplLegend(colorFn, lo, hi, label, signed, loText, hiText) {
  const wrap = iplEl("div", "ipl-legend");
  const canvas = iplEl("canvas", "ipl-legend-bar");
  canvas.width = 128;
  canvas.height = 1;
  const ctx = canvas.getContext("2d");
  for (let x = 0; x < 128; x++) {
    const t = x / 127;
    ctx.fillStyle = iplRgb(colorFn(signed ? t * 2 - 1 : t));
    ctx.fillRect(x, 0, 1, 1);
  }
  wrap.append(iplEl("span", "ipl-legend-lo", loText ?? iplFmt(lo)), canvas, iplEl("span", "ipl-legend-hi", hiText ?? iplFmt(hi)));
  if (label) wrap.prepend(iplEl("span", "ipl-legend-label", label));
  return wrap;
}

/** model.on with automatic removal: returns a cleanup function. */
function iplWatch(model, names, cb) {
  const events = names.map((n) => `change:${n}`);
  for (const e of events) model.on(e, cb);
  return () => events.forEach((e) => model.off(e, cb));
}
