// Runtime for exported HTML (see InterplabView.to_html). Python defines ESM, CSS,
// CSS_KEY, STATE and ELEMENT_ID above this file. A mock model with anywidget's
// API (get / set / on / off / save_changes / send) lets the very same ESM run
// without a kernel. Nothing here touches the network: the ESM is imported from
// a Blob URL built from the inlined source.
(async () => {
  // Every copy of this output (the same HTML displayed twice) gets its own model;
  // a copy that already rendered is left alone, so re-running the script is a no-op.
  const targets = [...document.querySelectorAll(`[id="${ELEMENT_ID}"]`)].filter((el) => !el.dataset.iplState);
  if (targets.length === 0) return;
  targets.forEach((el) => (el.dataset.iplState = "loading"));
  if (!document.querySelector(`style[data-ipl-css="${CSS_KEY}"]`)) {
    const style = document.createElement("style");
    style.dataset.iplCss = CSS_KEY;
    style.textContent = CSS;
    document.head.appendChild(style);
  }
  const toDataView = (b64) => {
    const bin = atob(b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new DataView(bytes.buffer);
  };
  const makeModel = (state) => {
    const decoded = new Map();
    const listeners = new Map();
    const fire = (evt) => {
      for (const cb of [...(listeners.get(evt) ?? [])]) cb();
    };
    return {
      get(name) {
        const value = state[name];
        if (value && typeof value === "object" && "__b64__" in value) {
          if (!decoded.has(name)) decoded.set(name, toDataView(value.__b64__));
          return decoded.get(name);
        }
        return value;
      },
      set(name, value) {
        state[name] = value;
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
  };
  const url = URL.createObjectURL(new Blob([ESM], { type: "text/javascript" }));
  try {
    const mod = await import(url);
    const widget = typeof mod.default === "function" ? await mod.default() : mod.default;
    const registry = (window.__interplab_models ??= {});
    for (const el of targets) {
      try {
        const model = makeModel(structuredClone(STATE));
        let key = ELEMENT_ID;
        for (let n = 2; key in registry; n++) key = `${ELEMENT_ID}#${n}`;
        registry[key] = model;
        await widget.initialize?.({ model });
        await widget.render({ model, el });
        el.dataset.iplState = "rendered";
      } catch (err) {
        el.dataset.iplState = "error";
        console.error("interplab view failed to render", err);
      }
    }
  } catch (err) {
    targets.forEach((el) => (el.dataset.iplState = "error"));
    console.error("interplab view failed to load", err);
  } finally {
    URL.revokeObjectURL(url);
  }
})();
