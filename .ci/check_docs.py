"""Checks a built site: API coverage, maths that renders, no external scripts.

`make docs` runs it after Sphinx: python .ci/check_docs.py docs/_build/html

* every public name has an entry in the HTML API pages;
* every page's maths is well formed: no TeX (``\\nabla``, ``\\frac``,
  ``\\mathbb``, ...) outside a math element, and no prose inside one (three
  or more ordinary words in a row once ``\\text{...}`` and TeX commands are
  removed) — the two symptoms of a ``$$`` that the Markdown parser paired
  with the wrong partner;
* no page loads a script from another site (MathJax is served from
  ``_static/mathjax``), so the site reads offline.
"""

from html.parser import HTMLParser
import importlib
import inspect
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))
import gen_api  # noqa: E402

TEX_OUTSIDE = re.compile(
  r"\\(?:nabla|frac|mathbb|mathcal|mathrm|operatorname|sum|int|sigma|theta)\b"
)
PROSE = re.compile(r"\b[A-Za-z]{3,}(?:\s+[A-Za-z]{2,}){2,}\b")
PRIVATE_PATH = re.compile(r"\bscoregrad\._src[\w.]*|\bjaxlib\._jax[\w.]*")
TEX_NOISE = re.compile(r"\\(?:text|mathrm|operatorname|mathbf|textrm|mbox)\{[^}]*\}|\\[A-Za-z]+")


class _Page(HTMLParser):
  """Splits a page's text into math, code and prose, and lists its script sources."""

  SKIP = frozenset({"pre", "code", "script", "style", "kbd", "samp"})

  def __init__(self):
    super().__init__(convert_charrefs=True)
    self.stack: list[str] = []  # "math", "skip" or "" per open element
    self.math: list[str] = []
    self.text: list[str] = []
    self.scripts: list[str] = []

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    if tag == "script" and attrs.get("src"):
      self.scripts.append(attrs["src"] or "")
    if tag in ("br", "img", "meta", "link", "input", "hr", "source"):
      return
    classes = (attrs.get("class") or "").split()
    if tag in self.SKIP or "highlight" in classes or "output" in classes:
      kind = "skip"
    elif "math" in classes:
      kind = "math"
    else:
      kind = ""
    self.stack.append(kind)

  def handle_endtag(self, tag):
    if tag in ("br", "img", "meta", "link", "input", "hr", "source"):
      return
    if self.stack:
      self.stack.pop()

  def handle_data(self, data):
    if "skip" in self.stack:
      return
    (self.math if "math" in self.stack else self.text).append(data)


def check_pages(site: pathlib.Path) -> list[str]:
  """The maths and script problems of every HTML page under ``site``."""
  problems = []
  for path in sorted(site.rglob("*.html")):
    rel = path.relative_to(site)
    if rel.parts[0] in ("_modules", "_static", "_sources"):
      continue  # highlighted source listings and search pages, not prose
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    for src in page.scripts:
      if re.match(r"(?:[a-z]+:)?//", src):
        problems.append(f"{rel}: loads an external script {src!r}; serve it from _static/")
    for chunk in page.text:
      for hit in TEX_OUTSIDE.finditer(chunk):
        context = chunk[max(0, hit.start() - 40) : hit.end() + 40].replace("\n", " ")
        problems.append(f"{rel}: TeX outside a math element: ...{context}...")
    if rel.parts[0] == "api":
      for chunk in page.text:
        for hit in PRIVATE_PATH.finditer(chunk):
          problems.append(f"{rel}: private path {hit.group(0)!r} shown; name the public one")
    for chunk in page.math:
      words = PROSE.search(TEX_NOISE.sub(" ", chunk))
      if words:
        problems.append(f"{rel}: prose inside a math element: {words.group(0)!r} in {chunk[:80]!r}")
  return problems


def main(site: pathlib.Path) -> int:
  problems = check_pages(site)
  if problems:
    print("\n".join(problems))
    print(f"check_docs: {len(problems)} maths/script problems in {site}")
    return 1
  missing = []
  for module, _, _ in gen_api.PUBLIC_MODULES:
    text = (site / "api" / f"{module.replace('.', '_')}.html").read_text()
    ids = set(re.findall(r'id="([^"]+)"', text))
    mod = importlib.import_module(module)
    for name in mod.__all__:
      obj = getattr(mod, name)
      if inspect.ismodule(obj):
        ok = f"{obj.__name__.replace('.', '_')}.html" in text
      else:
        # Indexed entries have an anchor; repeats (:no-index:) show the signature.
        sig = f'<span class="sig-name descname"><span class="pre">{name}</span>'
        ok = f"{module}.{name}" in ids or sig in text
      if not ok:
        missing.append(f"{module}.{name}")
  if missing:
    print("public names missing from the built API pages:", ", ".join(missing))
    return 1
  count = sum(len(importlib.import_module(m).__all__) for m, _, _ in gen_api.PUBLIC_MODULES)
  print(f"check_docs: all {count} public names have an entry in {site / 'api'}")
  return 0


if __name__ == "__main__":
  sys.exit(main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs/_build/html")))
