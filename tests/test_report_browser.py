"""`wsae report` pages driven in a real browser: Debian's chromium, headless, via selenium and the
distribution's chromedriver (no driver download). .ci/run installs both and sets
WSAE_BROWSER_TESTS=required, so in CI these tests fail rather than skip when the browser is
missing; elsewhere they skip with the install command."""

import json
import os
import shutil

import numpy as np
import pytest
from test_report import _arr, page_data

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser():
  missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
  try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
  except ImportError:
    missing.append("selenium (pip install -e '.[test]')")
  if missing:
    why = f"browser tests need {missing}: apt-get install -y chromium chromium-driver"
    if os.environ.get("WSAE_BROWSER_TESTS") == "required":
      pytest.fail(why)
    pytest.skip(why)
  opts = webdriver.ChromeOptions()
  opts.binary_location = CHROMIUM
  for a in (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--window-size=1400,900",
  ):
    opts.add_argument(a)
  opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
  driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
  driver.implicitly_wait(5)
  yield driver
  driver.quit()


def _open(browser, path):
  browser.get(path.resolve().as_uri())
  browser.get_log("performance")  # start each page with empty logs
  browser.get_log("browser")


def _requests(browser):
  events = [json.loads(e["message"])["message"] for e in browser.get_log("performance")]
  return [
    e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"
  ]


def _errors(browser):
  return [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_clicking_a_latent_shows_its_contexts_and_nothing_is_fetched(browser, store_run):
  run, _ = store_run
  path = run / "report.html"
  browser.get(path.resolve().as_uri())
  loaded = _requests(browser)
  assert loaded == [path.resolve().as_uri()], loaded  # the page itself, and nothing else
  d = page_data(path)
  c = d["contexts"]
  rows = _arr(c["rows"], "<i4").reshape(d["latents"]["n"], c["examples"])
  bands = _arr(c["bands"], "i1").reshape(rows.shape)
  tokens = _arr(c["tokens"], "<u4")
  browser.find_element("id", "tab-latents").click()
  first = browser.find_element("css selector", "#latent-table tr.latent-row")
  j = int(first.get_attribute("data-latent"))
  assert j == int(np.argmax(d["latents"]["frequency"]))  # sorted by frequency, most frequent first
  first.click()
  detail = browser.find_element("id", "latent-detail")
  assert detail.find_element("tag name", "h2").text == f"Latent {j}"
  lines = detail.find_elements("css selector", ".ctx")
  # Every example of the latent: the top rows, then the bands from the highest down.
  expected = np.concatenate([rows[j][bands[j] == b] for b in (0, 3, 2, 1)])
  assert [int(e.get_attribute("data-row")) for e in lines] == expected.tolist()
  assert len(detail.find_elements("css selector", ".ctx-group")) == len(set(bands[j]) - {-1})
  hit = lines[0].find_element("css selector", ".tok.hit")
  assert hit.text == c["vocab"][str(int(tokens[expected[0]]))]
  # Its activation histogram: 20 bars, as many rows as the latent is active on.
  bars = detail.find_elements("css selector", "#act-hist rect")
  assert len(bars) == 20
  assert (
    sum(
      int(
        b.find_element("tag name", "title").get_attribute("textContent").split(": ")[1].split()[0]
      )
      for b in bars
    )
    == d["latents"]["count"][j]
  )
  # Undecoded token ids are kept apart on screen (they ran together: "#339#485#82").
  toks = lines[0].find_elements("css selector", ".tok")
  for a, b in zip(toks, toks[1:]):
    assert (
      b.location["x"] >= a.location["x"] + a.size["width"] + 3 or b.location["y"] > a.location["y"]
    )
  # A neighbour link opens that latent; the URL records it, so the view can be shared.
  link = detail.find_element("css selector", "a.latent-link")
  k = int(link.get_attribute("data-latent"))
  link.click()
  assert browser.find_element("css selector", "#latent-detail h2").text == f"Latent {k}"
  assert browser.current_url.endswith(f"#latent-{k}")
  assert _requests(browser) == [] and _errors(browser) == []


def test_search_and_sort_the_latent_table(browser, store_run):
  run, _ = store_run
  d = page_data(run / "report.html")
  _open(browser, run / "report.html")
  browser.find_element("id", "tab-latents").click()
  header = browser.find_element("xpath", "//table[@id='latent-table']//th[text()='latent']")
  header.click()  # ascending by id
  ids = [
    int(r.get_attribute("data-latent"))
    for r in browser.find_elements("css selector", "#latent-table tr.latent-row")
  ]
  assert ids == list(range(d["latents"]["n"]))
  box = browser.find_element("id", "latent-search")
  box.send_keys("17")
  import time

  deadline = time.time() + 5
  while time.time() < deadline:
    shown = browser.find_elements("css selector", "#latent-table tr.latent-row")
    if len(shown) < d["latents"]["n"]:
      break
    time.sleep(0.1)
  texts = [r.text for r in shown]
  assert texts and all("17" in t for t in texts)
  assert "17" in [t.split()[0] for t in texts]
  assert _errors(browser) == []


def test_synthetic_page_shows_the_closed_form_and_true_features(browser, tied_run):
  _open(browser, tied_run / "report.html")
  browser.find_element("id", "tab-synthetic").click()
  verdict = browser.find_element("css selector", "#panel-synthetic .note").text
  assert verdict == page_data(tied_run / "report.html")["synthetic"]["closed_form"]["verdict"]
  rows = browser.find_elements("css selector", "#closed-form tr")
  assert len(rows) == 3 and "encoder matching" in rows[0].text
  assert browser.find_elements("css selector", "#cos-map rect")
  assert _requests(browser) == [] and _errors(browser) == []


def test_the_cos_map_is_sorted_by_the_matching_with_axes_and_a_scale(browser, synthetic_run):
  """Row r of the map is latent row_order[r]: first each true feature's matched latent in
  feature order (the diagonal carries the matched cosines), then the rest; the map has feature
  ticks, axis titles and a −1…1 colour scale."""
  import base64

  d = page_data(synthetic_run / "report.html")["synthetic"]
  n, order = d["n_features"], d["row_order"]
  cos = np.frombuffer(base64.b64decode(d["cos"]), np.int8).reshape(-1, n) / 127
  assert sorted(order) == list(range(len(order)))
  for r in range(d["n_matched"]):
    j = d["feature_of_latent"][order[r]]
    assert j >= 0 and (r == 0 or j > d["feature_of_latent"][order[r - 1]])
  _open(browser, synthetic_run / "report.html")
  browser.find_element("id", "tab-synthetic").click()
  cmap = browser.find_element("id", "cos-map")
  ticks = [t.text for t in cmap.find_elements("css selector", "text.x-tick")]
  assert ticks[0] == "0" and all(t.isdigit() for t in ticks)
  labels = cmap.text
  assert "true feature" in labels and "latents (matched" in labels
  assert [t.text for t in cmap.find_elements("css selector", "text.scale-tick")] == ["1", "0", "−1"]
  first = cmap.find_elements("css selector", "rect title")[0].get_attribute("textContent")
  lat = order[0]
  assert first.startswith(f"latent {lat}, feature ")
  b = int(first.split("feature ")[1].split(":")[0])
  assert float(first.split("cos ")[1]) == pytest.approx(cos[lat, b], abs=0.01)
  assert _errors(browser) == []


def test_synthetic_page_of_a_topk_sae_has_no_closed_form_verdict(browser, synthetic_run):
  # The closed form is the tied theory SAE's optimum; a Top-k SAE is another model class.
  _open(browser, synthetic_run / "report.html")
  browser.find_element("id", "tab-synthetic").click()
  assert not browser.find_elements("css selector", "#closed-form tr")
  assert "tied theory SAE" in browser.find_element("id", "closed-form-note").text
  assert browser.find_elements("css selector", "#cos-map rect")
  browser.find_element("id", "tab-overview").click()
  assert len(browser.find_elements("css selector", "#gamma rect")) == 20
  assert _requests(browser) == [] and _errors(browser) == []


def test_sweep_page_hover_names_the_member(browser, tmp_path):
  from selenium.webdriver import ActionChains

  from wsae_jax.app import cli

  rows = [
    {"seed": i, "k": k, "l0": float(k) + 0.1 * i, "mse": 1.0 / k + 0.05 * i}
    for i in range(2)
    for k in (2, 4, 8)
  ]
  (tmp_path / "sweep.json").write_text(json.dumps({"sae_config": {}, "rows": rows}))
  assert cli.main(["report", str(tmp_path)]) == 0
  _open(browser, tmp_path / "report.html")
  browser.find_element("id", "tab-sweep").click()
  dots = browser.find_elements("css selector", "#pareto circle.member")
  assert len(dots) == 6
  front = page_data(tmp_path / "report.html")["sweep"]["front"]
  assert sorted(
    int(c.get_attribute("data-member"))
    for c in browser.find_elements("css selector", "#pareto circle.on-front")
  ) == sorted(front)
  ActionChains(browser).move_to_element(dots[4]).perform()
  box = browser.find_element("id", "hover-box")
  assert box.is_displayed() and box.text.startswith("member 4")
  assert "k: 4\nl0: 4.100" in box.text  # member 4: seed 1, k = 4
  assert _requests(browser) == [] and _errors(browser) == []


def test_sweep_page_draws_one_front_per_setting_coloured_by_weighting(browser, tmp_path):
  from wsae_jax.app import cli

  rows = [
    {"seed": i, "sparsity": S, "alpha": a, "l0": l0 + i, "mse": 1.0 / (l0 + i)}
    for S, l0 in ((0.7, 8.0), (0.99, 1.0))
    for i in range(2)
    for a in (0.0, 1.0)
  ]
  (tmp_path / "sweep.json").write_text(json.dumps({"sae_config": {}, "rows": rows}))
  assert cli.main(["report", str(tmp_path)]) == 0
  _open(browser, tmp_path / "report.html")
  browser.find_element("id", "tab-sweep").click()
  charts = browser.find_elements("css selector", "svg.pareto")
  assert [c.get_attribute("data-setting") for c in charts] == ["sparsity = 0.7", "sparsity = 0.99"]
  for c in charts:
    dots = c.find_elements("css selector", "circle.member")
    assert len(dots) == 4
    by_alpha = {}
    for d in dots:
      by_alpha.setdefault(rows[int(d.get_attribute("data-member"))]["alpha"], set()).add(
        d.value_of_css_property("fill")
      )
    assert all(len(v) == 1 for v in by_alpha.values()) and by_alpha[0.0] != by_alpha[1.0]
  assert _errors(browser) == []


def test_density_axes_read_in_their_units_and_counts_are_whole(browser, store_run):
  """The density histogram's x ticks are log10 frequencies on the bins' edges (they were bin
  indices), its y ticks whole latents; the axis title sits clear of the top tick."""
  run, _ = store_run
  d = page_data(run / "report.html")
  edges = d["scores"]["firing_frequency_hist"]["log10_edges"]
  _open(browser, run / "report.html")
  card = browser.find_element("id", "density")
  texts = [t for t in card.find_elements("css selector", "svg text")]
  xs = [
    t
    for t in texts
    if t.get_attribute("text-anchor") == "middle" and t.text != "" and "frequency" not in t.text
  ]
  ys = [t for t in texts if t.get_attribute("text-anchor") == "end"]
  x_vals = [float(t.text) for t in xs]
  assert len(x_vals) == 5 and min(x_vals) == pytest.approx(edges[0], abs=0.01)
  assert max(x_vals) == pytest.approx(edges[-1], abs=0.01)
  assert all(float(t.text).is_integer() for t in ys)
  title = next(t for t in texts if t.text == "latents")
  top_tick = min(ys, key=lambda t: t.location["y"])
  assert title.location["y"] + title.size["height"] <= top_tick.location["y"] + 1
  assert _errors(browser) == []


def test_without_activations_the_table_says_not_measured(browser, store_run, tmp_path):
  run, _ = store_run
  from wsae_jax.app import cli

  out = tmp_path / "bare.html"
  assert cli.main(["report", str(run), "--out", str(out)]) == 0
  _open(browser, out)
  browser.find_element("id", "tab-latents").click()
  heads = [th.text for th in browser.find_elements("css selector", "#latent-table th")]
  assert "frequency" not in heads and "mean" not in heads and heads[0] == "latent"
  assert "not measured" in browser.find_element("id", "panel-latents").text
  assert _errors(browser) == []


def test_the_metrics_card_shows_each_number_once(browser, store_run, tmp_path):
  """With an eval.json beside the run, each metric is one row with two columns (the report's
  rows, eval.json), not two tables repeating the same numbers."""
  import shutil

  from wsae_jax.app import cli

  run, store = store_run
  copy = tmp_path / "run"
  shutil.copytree(run, copy)
  assert (
    cli.main(
      ["eval", str(copy), "--activations", str(store), "--eval-shards", "1", "--no-progress"]
    )
    == 0
  )
  assert (
    cli.main(
      [
        "report",
        str(copy),
        "--activations",
        str(store),
        "--eval-shards",
        "1",
        "--overwrite",
        "--no-progress",
      ]
    )
    == 0
  )
  _open(browser, copy / "report.html")
  table = browser.find_element("id", "metrics")
  heads = [th.text for th in table.find_elements("css selector", "th")]
  assert heads[1:] == ["on the report's rows", "eval.json (wsae eval)"]
  names = [
    r.find_elements("tag name", "td")[0].text for r in table.find_elements("css selector", "tr")[1:]
  ]
  assert len(names) == len(set(names)) and "fvu" in names
  row = next(
    r
    for r in table.find_elements("css selector", "tr")[1:]
    if r.find_elements("tag name", "td")[0].text == "fvu"
  )
  a, b = [td.text for td in row.find_elements("tag name", "td")[1:]]
  assert a and b  # both measured the same rows' FVU
  assert _errors(browser) == []


def test_a_latent_shows_its_logit_effects(browser, logit_effects_run):
  run, _ = logit_effects_run
  _open(browser, run / "report.html")
  browser.find_element("id", "tab-latents").click()
  browser.find_element("css selector", "#latent-table tr.latent-row").click()
  box = browser.find_element("id", "logit-effects")
  promotes = box.find_element("css selector", ".promotes").text
  assert promotes.startswith("promotes: ") and promotes.count("#") == 10  # no tokenizer: ids
  assert box.find_element("css selector", ".suppresses").text.startswith("suppresses: ")
  assert _errors(browser) == []


def test_a_latent_shows_its_density_per_token_class(browser, tmp_path):
  from test_harvest import _tiny_llama_with_tokenizer

  from wsae_jax.app import cli

  folder, corpus = _tiny_llama_with_tokenizer(tmp_path)
  run = tmp_path / "run"
  assert (
    cli.main(
      [
        "train",
        "--out",
        str(run),
        "--model",
        str(folder),
        "--layer",
        "1",
        "--corpus",
        str(corpus),
        "--context-len",
        "16",
        "--arch",
        "topk",
        "--k",
        "4",
        "--d-sae",
        "32",
        "--steps",
        "5",
        "--batch-size",
        "32",
        "--hold-out-shards",
        "1",
        "--no-progress",
      ]
    )
    == 0
  )
  assert (
    cli.main(
      [
        "report",
        str(run),
        "--activations",
        str(run / "activations"),
        "--eval-shards",
        "1",
        "--no-progress",
      ]
    )
    == 0
  )
  _open(browser, run / "report.html")
  browser.find_element("id", "tab-latents").click()
  browser.find_element("css selector", "#latent-table tr.latent-row").click()
  table = browser.find_element("id", "class-density")
  rows = [r.text for r in table.find_elements("css selector", "tr")[1:]]
  assert rows and rows[0].startswith("digit")  # every word of the tiny corpus holds a digit
  assert _errors(browser) == []
