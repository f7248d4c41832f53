"""interplab's AttentionView vs circuitsvis' attention_heads: bytes and time to first render.

Same causal attention tensor ([12 heads, T, T], T = 256 and 512) for both. Printed
side by side with interplab / circuitsvis ratios (lower is better for both).

Bytes sent to the browser:
  - offline HTML: the self-contained document each library produces without a
    network (interplab ``to_html()``; circuitsvis ``local_src``, which inlines its
    1.3 MB bundle). This is what a learner offline, a static viewer or a saved
    notebook carries.
  - live: interplab as a widget sends ESM + CSS + binary buffer + JSON traits over
    the kernel comm; circuitsvis online sends its HTML (props as JSON) and the
    browser fetches the bundle from unpkg (bundle size taken from its wheel).
Time to first render: headless Chromium opens the offline HTML from disk; the
clock is ``performance.now()`` (ms since navigation start) at the first animation
frame where every head thumbnail and the enlarged head are painted (non-blank).
Median of ``--reps`` fresh pages (``--cv-reps`` for circuitsvis, which needs
about 80 s at 256 tokens and minutes at 512 on a small machine).

Needs: circuitsvis and playwright, from the repository root:
  .venv/bin/pip install -c constraints.txt -e '.[bench]'
(circuitsvis brings its own dependencies, importlib-metadata and zipp among them; the
constraints keep torch at the course's pinned version), and /usr/bin/chromium.
Run: python benchmarks/widgets_vs_circuitsvis.py [--reps 3] [--tokens 256 512]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np

from interplab_widgets import AttentionView

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
HEADS = 12

# Every canvas matching `selector` exists (at least `count`) and has a painted pixel.
PAINTED = """([selector, count]) => {
  const canvases = [...document.querySelectorAll(selector)];
  if (canvases.length < count) return false;
  for (const c of canvases) {
    if (!c.width || !c.height) return false;
    const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let painted = false;
    for (let i = 3; i < px.length; i += 4) if (px[i] !== 0) { painted = true; break; }
    if (!painted) return false;
  }
  return performance.now();
}"""


def causal_attention(heads: int, n: int, seed: int = 0) -> np.ndarray:
    """Softmax of random scores with the causal mask, ``[heads, n, n]`` float32."""
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((heads, n, n), dtype=np.float32) * 2
    scores[:, np.triu_indices(n, 1)[0], np.triu_indices(n, 1)[1]] = -np.inf
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    return weights / weights.sum(-1, keepdims=True)


def interplab_live_bytes(view: AttentionView) -> int:
    """What the kernel sends: ESM, CSS, the binary buffer and the JSON traits."""
    state = view.view_state()
    buffers = sum(len(v) for v in state.values() if isinstance(v, bytes))
    json_part = len(json.dumps({k: v for k, v in state.items() if not isinstance(v, bytes)}).encode())
    return len(str(view._esm).encode()) + len(str(view._css).encode()) + buffers + json_part


def time_to_render(browser, path: Path, selector: str, count: int, reps: int) -> float:
    times = []
    for _ in range(reps):
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(900_000)
        page.goto(path.as_uri(), wait_until="commit")
        handle = page.wait_for_function(PAINTED, arg=[selector, count], polling="raf")
        times.append(float(handle.json_value()))
        context.close()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="renders per size for interplab")
    parser.add_argument("--cv-reps", type=int, default=1, help="renders per size for circuitsvis (minutes each at 512 tokens)")
    parser.add_argument("--tokens", type=int, nargs="+", default=[256, 512])
    args = parser.parse_args()

    import circuitsvis
    from circuitsvis.attention import attention_heads
    from playwright.sync_api import sync_playwright

    bundle = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    print(f"interplab AttentionView vs circuitsvis {circuitsvis.__version__} attention_heads; "
          f"{HEADS} heads, causal softmax pattern; headless Chromium, median of {args.reps} (interplab) "
          f"and {args.cv_reps} (circuitsvis) renders\n")
    header = f"{'tokens':>6}  {'metric':<28}{'interplab':>14}{'circuitsvis':>14}{'ratio':>9}"
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        for n in args.tokens:
            attention = causal_attention(HEADS, n)
            tokens = [f" t{i}" for i in range(n)]
            view = AttentionView(tokens, attention)
            ours_html = view.to_html()
            theirs = attention_heads(attention=attention, tokens=tokens, mask_upper_tri=True)
            theirs_html = f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>{theirs.local_src}</body></html>"
            ours_path, theirs_path = Path(tmp, f"ours{n}.html"), Path(tmp, f"theirs{n}.html")
            ours_path.write_text(ours_html, encoding="utf-8")
            theirs_path.write_text(theirs_html, encoding="utf-8")

            rows = [
                ("bytes, offline HTML", len(ours_html.encode()), len(theirs_html.encode())),
                ("bytes, live (widget / CDN)", interplab_live_bytes(view), len(theirs.cdn_src.encode()) + bundle.stat().st_size),
                ("ms to first render", time_to_render(browser, ours_path, ".ipl-thumb canvas, .ipl-big", HEADS + 1, args.reps),
                 time_to_render(browser, theirs_path, "canvas", HEADS + 1, args.cv_reps)),
            ]
            for name, ours, them in rows:
                fmt = (lambda v: f"{v:,.0f}")
                print(f"{n:>6}  {name:<28}{fmt(ours):>14}{fmt(them):>14}{ours / them:>9.3f}")
        browser.close()
    print("\nratio = interplab / circuitsvis (targets: bytes <= 0.25, render time <= 1.0)")


if __name__ == "__main__":
    main()
