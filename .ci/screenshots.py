"""Opens pages of the built site in headless Chromium, saves screenshots, checks they render.

`make docs-check` runs it after `make docs`:
python .ci/screenshots.py docs/_build/html docs/_build/screenshots

For the landing page, the ``score_function`` API entry, a notebook with
figures and a benchmark page, it saves a PNG (Chromium's ``--screenshot``)
and fails when Chromium errors, when the screenshot is blank, when a page that has maths shows none
rendered by MathJax after scripts ran (``--dump-dom``: no ``mjx-container``,
or raw ``\\(`` left in the text), or when an ``<img>`` points at a file that
is not in the site. Needs Debian's ``chromium`` package (or CHROMIUM=path).
"""

from __future__ import annotations

from html.parser import HTMLParser
import os
import pathlib
import shutil
import subprocess
import sys
from urllib.parse import unquote, urlparse

import matplotlib.image

PAGES = (
  ("index", "index.html"),
  ("api_score_function", "api/scoregrad.html"),  # score_function is its first entry
  ("notebook_01", "notebooks/01_log_derivative_trick.html"),
  ("benchmark_mohamed", "benchmarks/mohamed.html"),
)


class _Images(HTMLParser):
  def __init__(self):
    super().__init__()
    self.sources: list[str] = []

  def handle_starttag(self, tag, attrs):
    if tag == "img":
      self.sources.append(dict(attrs).get("src") or "")


def _chromium() -> str:
  found = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
  if not found:
    sys.exit(
      "screenshots: no Chromium found; install Debian's package "
      "(`sudo apt-get install chromium`) or set CHROMIUM=/path/to/chrome."
    )
  return found


def _run(browser: str, *args: str) -> subprocess.CompletedProcess:
  flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
  flags += ["--window-size=1280,1800", "--virtual-time-budget=10000"]
  return subprocess.run(
    [browser, *flags, *args], capture_output=True, text=True, timeout=120, check=False
  )


def main(site: pathlib.Path, out: pathlib.Path) -> int:
  browser = _chromium()
  out.mkdir(parents=True, exist_ok=True)
  problems = []
  for name, page in PAGES:
    path = site / page
    url = path.resolve().as_uri()  # no #fragment: headless Chromium then paints a blank page
    png = out / f"{name}.png"
    png.unlink(missing_ok=True)
    shot = _run(browser, f"--screenshot={png}", url)
    if shot.returncode != 0 or not png.exists() or png.stat().st_size == 0:
      problems.append(f"{page}: Chromium failed ({shot.returncode}): {shot.stderr[-300:]}")
      continue
    pixels = matplotlib.image.imread(png)
    if float(pixels.std()) < 1e-3:
      problems.append(f"{page}: the screenshot is blank (the page did not render)")
    source = path.read_text(encoding="utf-8")
    if 'class="math' in source:
      dom = _run(browser, "--dump-dom", url).stdout
      if "<mjx-container" not in dom:
        problems.append(f"{page}: has maths but MathJax rendered none (is _static/mathjax there?)")
      elif "\\(" in dom.split("<body", 1)[-1].replace("<script", "\0").split("\0")[0]:
        problems.append(f"{page}: raw \\( left in the page after MathJax ran")
    images = _Images()
    images.feed(source)
    for src in images.sources:
      link = urlparse(src)
      if link.scheme or link.netloc:
        problems.append(f"{page}: image {src!r} is not served by the site")
      elif not (path.parent / unquote(link.path)).is_file():
        problems.append(f"{page}: image {src!r} does not exist in the site")
    print(f"screenshots: {png} ({len(images.sources)} images)")
  if problems:
    print("\n".join(problems))
    return 1
  print(f"screenshots: {len(PAGES)} pages rendered, maths and images present; PNGs in {out}")
  return 0


if __name__ == "__main__":
  root = pathlib.Path(__file__).resolve().parents[1]
  site = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else root / "docs/_build/html"
  out = pathlib.Path(sys.argv[2]) if len(sys.argv) > 2 else root / "docs/_build/screenshots"
  sys.exit(main(site, out))
