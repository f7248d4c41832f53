// Runtime for exported HTML (see InterplabView.to_html). Python defines ESM, CSS,
// CSS_KEY, STATE and ELEMENT_ID above this file. A mock model with anywidget's
// API (get / set / on / off / save_changes / send) lets the very same ESM run
// without a kernel. Nothing here touches the network: the ESM is imported from
// a Blob URL built from the inlined source.
(async () => {
  const el = document.getElementById(ELEMENT_ID);
  if (!el || el.dataset.iplState) return; // re-run or duplicated output: render once
  el.dataset.iplState = "loading";
  if (!document.querySelector(`style[data-ipl-css="${CSS_KEY}"]`)) {
    const style = document.createElement("style");
    style.dataset.iplCss = CSS_KEY;
    style.textContent = CSS;
    document.head.appendChild(style);
  }
  const decoded = new Map();
  const listeners = new Map();
  const toDataView = (b64) => {
    const bin = atob(b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new DataView(bytes.buffer);
  };
  const fire = (evt) => {
    for (const cb of [...(listeners.get(evt) ?? [])]) cb();
  };
  const model = {
    get(name) {
      const value = STATE[name];
      if (value && typeof value === "object" && "__b64__" in value) {
        if (!decoded.has(name)) decoded.set(name, toDataView(value.__b64__));
        return decoded.get(name);
      }
      return value;
    },
    set(name, value) {
      STATE[name] = value;
      decoded.delete(name);
      fire(`change:${name}`);
      fire("change");
    },
    save_changes() {},
    send() {},
    on(evt, cb) {
      if (!listeners.has(evt)) listeners.set(evt, new Set());
      listeners.get(evt).add(cb);
    },
    off(evt, cb) {
      if (!evt) listeners.clear();
      else if (!cb) listeners.delete(evt);
      else listeners.get(evt)?.delete(cb);
    },
  };
  (window.__interplab_models ??= {})[ELEMENT_ID] = model;
  const url = URL.createObjectURL(new Blob([ESM], { type: "text/javascript" }));
  try {
    const mod = await import(url);
    const widget = typeof mod.default === "function" ? await mod.default() : mod.default;
    await widget.initialize?.({ model });
    await widget.render({ model, el });
    el.dataset.iplState = "rendered";
  } catch (err) {
    el.dataset.iplState = "error";
    console.error("interplab view failed to render", err);
  } finally {
    URL.revokeObjectURL(url);
  }
})();
