"""How fast a `wsae report` page opens in a real browser, and how large it is.

    python benchmarks/bench_report_page.py REPORT.html [REPORT2.html ...]
    python benchmarks/bench_report_page.py --synthetic-latents 4608   # no store needed

Opens each page in headless chromium (Debian's chromium + chromium-driver, through selenium), and
reports: file size; time from navigation to the load event and to the first panel drawn (the
script has run: data parsed, the overview built); time to open the Latents tab and then one
latent's panel (its contexts drawn), measured inside the page with performance.now(); the JS heap
after that. Each page is measured `--repeats` times in fresh tabs, median reported, next to an
empty page opened the same way (the browser's own floor, measured side by side). The issue's
targets (#13): a 4,608-latent page opens in under 3 s and stays under 50 MB.

`--synthetic-latents M` writes a page of M latents from random sparse codes (22,720 rows, 32
active latents per row, context length 128), the size of SmolLM2's 8x SAE on two held-out
shards, without a store or a model.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import common  # noqa: E402

OPEN_LATENT = """
const done = arguments[arguments.length - 1];
const t0 = performance.now();
document.getElementById('tab-latents').click();
const t1 = performance.now();
document.querySelector('#latent-table tr.latent-row').click();
const t2 = performance.now();
requestAnimationFrame(() => done({tab_ms: t1 - t0, latent_ms: t2 - t1,
  contexts: document.querySelectorAll('#latent-detail .ctx').length,
  heap_mb: performance.memory ? performance.memory.usedJSHeapSize / 1e6 : null}));
"""


def synthetic_page(latents: int, folder: pathlib.Path) -> pathlib.Path:
  import numpy as np

  import wsae_jax as w
  from wsae_jax.app import report

  B, K, L = 22_720, 32, 128
  rng = np.random.default_rng(0)
  lat = rng.integers(0, latents, (B, K))
  val = rng.exponential(1.0, (B, K))
  tokens = rng.integers(0, 49_152, B)
  cfg = w.TopKSAEConfig(d_in=576, d_sae=latents, k=K)
  params = {"W_dec": rng.standard_normal((latents, 576)).astype(np.float32)}
  strings = {int(t): f" tok{t}" for t in np.unique(tokens)}
  data = {
    "kind": "run",
    "title": f"synthetic page, {latents} latents",
    "notes": [],
    "config": {},
    "latents": report._latent_table(cfg, params, (None, lat, val), tokens, strings),
    "contexts": report._contexts((None, lat, val), tokens, L, strings, latents),
  }
  data["latents"].update(report._label_tags(latents, None), n=latents)
  path = folder / f"synthetic_{latents}.html"
  path.write_text(report.render(data), encoding="utf-8")
  return path


def browser():
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service

  opts = webdriver.ChromeOptions()
  opts.binary_location = "/usr/bin/chromium"
  for a in (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--window-size=1400,900",
    "--enable-precise-memory-info",
  ):
    opts.add_argument(a)
  d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
  d.set_script_timeout(60)
  return d


def measure(driver, path: pathlib.Path, interactive: bool) -> dict:
  t0 = time.perf_counter()
  driver.get(path.resolve().as_uri())  # returns after the load event
  wall = time.perf_counter() - t0
  nav = driver.execute_script(
    "const n = performance.getEntriesByType('navigation')[0];"
    "return {load_ms: n.loadEventEnd, dom_ms: n.domContentLoadedEventEnd};"
  )
  out = {"wall_s": wall, **nav}
  if interactive:
    out.update(driver.execute_async_script(OPEN_LATENT))
  return out


def main(argv=None):
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("pages", nargs="*", type=pathlib.Path)
  p.add_argument("--synthetic-latents", type=int, default=None)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--out", default="benchmarks/results/report_page.json")
  args = p.parse_args(argv)
  tmp = pathlib.Path(tempfile.mkdtemp())
  pages = list(args.pages)
  if args.synthetic_latents:
    pages.append(synthetic_page(args.synthetic_latents, tmp))
  empty = tmp / "empty.html"
  empty.write_text("<!doctype html><html><body>empty</body></html>")
  driver = browser()
  rows = []
  try:
    for page in pages:
      runs, floor = [], []
      for _ in range(args.repeats):  # the page and the empty page, alternating
        floor.append(measure(driver, empty, False))
        runs.append(measure(driver, page, True))
      med = {
        k: statistics.median(r[k] for r in runs)
        for k in runs[0]
        if isinstance(runs[0][k], (int, float))
      }
      row = {
        "page": str(page),
        "size_mb": page.stat().st_size / 1e6,
        **med,
        "empty_page_load_ms": statistics.median(r["load_ms"] for r in floor),
      }
      rows.append(row)
      print(
        f"{page.name}: {row['size_mb']:.1f} MB; load {row['load_ms']:.0f} ms (empty page "
        f"{row['empty_page_load_ms']:.0f} ms); Latents tab {row['tab_ms']:.0f} ms; one "
        f"latent {row['latent_ms']:.0f} ms ({row['contexts']:.0f} contexts); JS heap "
        f"{row.get('heap_mb') or float('nan'):.0f} MB"
      )
  finally:
    driver.quit()
  common.write_json(
    args.out,
    {
      "machine": common.machine(),
      "repeats": args.repeats,
      "pages": rows,
      "command": " ".join(sys.argv),
    },
  )
  return rows


if __name__ == "__main__":
  main()
