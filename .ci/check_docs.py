"""Checks a built site: every public name has an entry in the HTML API pages.

`make docs` runs it after Sphinx: python .ci/check_docs.py docs/_build/html
"""

import importlib
import inspect
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))
import gen_api  # noqa: E402


def main(site: pathlib.Path) -> int:
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
