"""Builds the sdist and wheel, checks them, and installs the wheel into a bare venv.

`make wheel-check` runs this (and `.ci/run` runs `make wheel-check`). Steps:

1. ``python -m build`` into a temporary folder, then ``twine check --strict``.
2. The archives hold what MANIFEST.in promises: the package, ``py.typed``, the
   LICENSE; no tests, benchmarks or notebooks.
3. A fresh ``python -m venv`` (no system site-packages), ``pip install`` of the
   wheel alone, without extras: pip resolves jax, jaxlib, optax and numpy from
   the index (PyPI, or whatever pip is configured to use). Then, from a folder
   outside the repository so that the clone cannot be imported by accident, a
   script imports scoregrad, checks that it came from the venv, and runs an
   estimate against its exact answer.

Usage: python .ci/wheel_check.py [--keep DIR]
"""

import argparse
import pathlib
import subprocess
import sys
import tarfile
import tempfile
import venv
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[1]

SMOKE = r"""
import pathlib, sys
import jax, jax.numpy as jnp
import scoregrad as sg
where = pathlib.Path(sg.__file__).resolve()
assert "site-packages" in where.parts, f"imported from {where}, not the installed wheel"
# E_{x ~ N(mu, 1)}[x^2] = mu^2 + 1, so d/dmu = 2 mu = 1.0 at mu = 0.5.
est = sg.score_function(num_samples=20000, baseline=sg.baselines.leave_one_out(), per_sample=True)
out = est.estimate(jax.random.key(0), lambda x: x ** 2, lambda m: sg.dists.Normal(m, 1.0),
                   jnp.array(0.5), est.init(jnp.array(0.5)))
se = float(sg.diagnostics.standard_error(out.per_sample))
z = (float(out.grad) - 1.0) / se
print(f"scoregrad {sg.__version__} from {where.parent}: grad {float(out.grad):.4f} "
      f"± {se:.4f} (exact 1.0, z = {z:+.2f})")
assert abs(z) < 4.4, z   # two-sided false-failure rate 1e-5
"""


def run(*cmd, **kw):
  print("+", " ".join(map(str, cmd)), flush=True)
  subprocess.run([str(c) for c in cmd], check=True, **kw)


def check_contents(dist: pathlib.Path) -> None:
  (wheel,) = dist.glob("*.whl")
  (sdist,) = dist.glob("*.tar.gz")
  wheel_names = zipfile.ZipFile(wheel).namelist()
  with tarfile.open(sdist) as tar:
    sdist_names = [n.split("/", 1)[1] for n in tar.getnames() if "/" in n]
  for names, label in [(wheel_names, wheel.name), (sdist_names, sdist.name)]:
    assert "scoregrad/__init__.py" in names and "scoregrad/py.typed" in names, label
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "notebooks/"))], label
  assert "LICENSE" in sdist_names, sdist.name
  assert any(n.endswith(".dist-info/licenses/LICENSE") for n in wheel_names), wheel.name


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--keep", type=pathlib.Path, help="build and install in DIR, kept")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory(prefix="scoregrad-wheel-") as tmp:
    work = args.keep or pathlib.Path(tmp)
    work.mkdir(parents=True, exist_ok=True)
    dist = work / "dist"
    run(sys.executable, "-m", "build", "--outdir", dist, ROOT)
    run(sys.executable, "-m", "twine", "check", "--strict", *sorted(dist.iterdir()))
    check_contents(dist)
    env = work / "venv"
    venv.EnvBuilder(with_pip=True, clear=True, system_site_packages=False).create(env)
    python = env / "bin" / "python"
    (wheel,) = dist.glob("*.whl")
    run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel)
    run(python, "-c", SMOKE, cwd=work, env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
  print("wheel-check: OK")


if __name__ == "__main__":
  main()
