"""`pip install .` must give a working package: build a wheel from a copy of the sources and check
that it ships the modules and the C++/CUDA sources (compiled on first use), and no notebook."""
import shutil, subprocess, sys, zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / 'tinygrad_book'
CSRC_EXTS = {'.cpp', '.cu', '.h', '.cuh'}


def csrc_files():
    d = LIB / 'csrc'
    return sorted(p.relative_to(ROOT).as_posix() for p in d.rglob('*') if p.suffix in CSRC_EXTS) if d.is_dir() else []


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    if not csrc_files(): pytest.skip('no C++/CUDA sources in tinygrad_book/csrc yet')
    tmp = tmp_path_factory.mktemp('wheel')
    src = tmp / 'src'
    src.mkdir()
    # build from a copy, so that no stale build/ or *.egg-info of the work tree leaks into the wheel
    for name in ('setup.py', 'settings.ini', 'pyproject.toml', 'MANIFEST.in', 'README.md', 'LICENSE', 'setup.cfg'):
        if (ROOT / name).exists(): shutil.copy2(ROOT / name, src / name)
    shutil.copytree(LIB, src / 'tinygrad_book', ignore=shutil.ignore_patterns('__pycache__', '*.so', '*.o'))
    r = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', str(tmp / 'dist'), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f'pip wheel failed:\n{r.stdout}\n{r.stderr}'
    wheels = list((tmp / 'dist').glob('*.whl'))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope='module')
def wheel_names(wheel):
    return zipfile.ZipFile(wheel).namelist()


def test_wheel_has_modules(wheel_names):
    wheel = wheel_names
    assert 'tinygrad_book/__init__.py' in wheel
    mods = sorted(p.relative_to(ROOT).as_posix() for p in LIB.glob('*.py'))
    assert not [m for m in mods if m not in wheel], f'modules missing from the wheel: {[m for m in mods if m not in wheel]}'


def test_wheel_ships_csrc(wheel_names):
    wheel = wheel_names
    missing = [f for f in csrc_files() if f not in wheel]
    assert not missing, f'C++/CUDA sources missing from the wheel (check package_data in setup.py): {missing}'
    assert any(n.startswith('tinygrad_book/csrc/') and n.endswith('.cpp') for n in wheel), 'no .cpp in the wheel'
    assert any(n.startswith('tinygrad_book/csrc/') and n.endswith('.cu') for n in wheel), 'no .cu in the wheel'


def test_wheel_has_no_notebooks(wheel_names):
    wheel = wheel_names
    assert not [n for n in wheel if n.endswith('.ipynb')]


def test_installed_wheel_works_without_the_repo(wheel, tmp_path):
    """Install the wheel alone (no notebooks, no repo on the path), import it, and let it compile its C++ source from
    the installed package data on first use. The package must not need nbdev or fastcore at run time."""
    target = tmp_path / 'site'
    r = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-compile', '-q', '--target', str(target),
                        str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    code = f"""
import sys; sys.path.insert(0, {str(target)!r})
import torch, tinygrad_book
from tinygrad_book.softmax import cross_entropy
assert tinygrad_book.__file__.startswith({str(target)!r}), tinygrad_book.__file__
x = torch.randn(5, 7, dtype=torch.float64, requires_grad=True); t = torch.tensor([0, 6, 2, 3, 1])
loss = cross_entropy(x, t); loss.backward()
torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(x, t))
bad = sorted(m for m in sys.modules if m.split('.')[0] in ('nbdev', 'fastcore', 'execnb'))
assert not bad, bad
print('ok', tinygrad_book.__version__)
"""
    env = {k: v for k, v in __import__('os').environ.items() if k != 'PYTHONPATH'}
    env['TORCH_EXTENSIONS_DIR'] = str(tmp_path / 'ext')
    r = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith('ok'), r.stdout
    assert any((tmp_path / 'ext').glob('tgb_softmax_*/*.so')), 'the extension was not built from the installed sources'


def test_wheel_requires_what_a_build_needs(wheel):
    "`pip install` alone must bring ninja (torch.utils.cpp_extension needs it to build the kernels)."
    meta = next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith('.dist-info/METADATA'))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    requires = [l.split(':', 1)[1].strip().split()[0].split(';')[0] for l in text.splitlines() if l.startswith('Requires-Dist:')
                and 'extra ==' not in l]
    names = {r.split('>')[0].split('<')[0].split('=')[0].lower() for r in requires}
    assert {'torch', 'numpy', 'ninja'} <= names, requires
