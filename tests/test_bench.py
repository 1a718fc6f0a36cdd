"""tinygrad_book.bench as a user meets it: the CLI's errors, chapter discovery, and the notebook's copy of `main`."""
import subprocess, sys
from pathlib import Path

import pytest

from tinygrad_book import bench

ROOT = Path(__file__).resolve().parent.parent


def cli(*args):
    return subprocess.run([sys.executable, '-m', 'tinygrad_book.bench', *args], capture_output=True, text=True, timeout=600)


def test_chapters_are_found_without_importing_them():
    code = ("import sys; from tinygrad_book import bench; found = bench.chapters(); "
            "print(sorted(found), 'tinygrad_book.softmax' in sys.modules)")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "'softmax'" in r.stdout and r.stdout.strip().endswith('False'), r.stdout


def test_every_module_with_benchmark_cases_is_found():
    "Each `@benchmark('x')` line in the package's sources maps chapter x to the module that holds it."
    found = bench.chapters()
    for f in (ROOT / 'tinygrad_book').glob('*.py'):
        for name in bench._DECORATOR.findall(f.read_text(encoding='utf-8')):
            assert f.stem in found[name]


def test_unknown_chapter_lists_the_chapters_with_benchmarks():
    r = cli('no_such_chapter')
    assert r.returncode == 2
    assert "error: no benchmark named 'no_such_chapter'" in r.stderr and 'softmax' in r.stderr, r.stderr
    assert 'Traceback' not in r.stderr


@pytest.mark.parametrize('args, msg', [(['--repeats', '0'], 'argument --repeats: must be at least 1, got 0'),
                                       (['--warmup', '-1'], 'argument --warmup: must be at least 0, got -1'),
                                       (['--repeats', 'x'], "expected an integer, got 'x'")])
def test_bad_counts_are_usage_errors(args, msg):
    r = cli('softmax', *args)
    assert r.returncode == 2 and msg in r.stderr and 'Traceback' not in r.stderr, r.stderr


def test_time_case_refuses_zero_repeats():
    case = bench.Case('noop', lambda: None, lambda: None)
    with pytest.raises(ValueError, match='repeats must be at least 1'):
        bench.time_case(case, repeats=0)
    o, r = bench.time_case(case, warmup=0, repeats=1)
    assert o >= 0 and r >= 0


def test_a_copy_of_the_module_uses_the_package_registry(capsys):
    """The notebook defines its own copies of these functions (as `__main__` does): its `main` must still find the
    cases that chapters register into `tinygrad_book.bench`."""
    @bench.benchmark('tgb_test_registry')
    def _cases(quick):
        return [bench.Case('sum of 1000 ints', lambda: sum(range(1000)), lambda: sum(list(range(1000))), 'list')]
    try:
        src = (ROOT / 'tinygrad_book' / 'bench.py').read_text(encoding='utf-8')
        ns = {'__name__': 'notebook_copy'}
        exec(compile(src, 'bench_copy', 'exec'), ns)
        assert ns['_REGISTRY'] is not bench._REGISTRY  # a separate copy, as in the notebook...
        assert ns['main'](['tgb_test_registry', '--repeats', '1', '--warmup', '0']) == 0  # ...that finds the cases
        out = capsys.readouterr().out
        assert 'ours/ref' in out and 'sum of 1000 ints' in out
    finally:
        bench._REGISTRY.pop('tgb_test_registry', None)


def test_the_harness_does_not_import_torch():
    "Chapters without torch (autodiff, imports, ledger) register benchmarks without importing it."
    code = "import sys; import tinygrad_book.bench as b; b.format_table([]); print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == 'False', r.stdout + r.stderr


def test_a_chapter_registered_by_two_modules_gets_both():
    "autodiff's cases come from autodiff.py and nn.py: both are imported, whichever registered first."
    found = bench.chapters()
    multi = {ch: mods for ch, mods in found.items() if len(mods) > 1}
    if not multi: pytest.skip('no chapter is registered by two modules')
    ch, mods = next(iter(multi.items()))
    code = (f"import sys, tinygrad_book.bench as b, tinygrad_book.{mods[0]}\n"
            f"b.cases_for({ch!r}, quick=True)\n"
            f"print(all('tinygrad_book.' + m in sys.modules for m in {mods!r}))")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip() == 'True', r.stdout + r.stderr


def test_registering_the_same_function_twice_keeps_one():
    "A notebook registers its copy, then the exported module registers the same function: one set of cases."
    def make():
        def cases(quick):
            return [bench.Case('noop', lambda: None, lambda: None)]
        return cases
    try:
        bench.benchmark('tgb_test_twice')(make()); bench.benchmark('tgb_test_twice')(make())
        assert len(bench.cases_for('tgb_test_twice')) == 1
    finally:
        bench._REGISTRY.pop('tgb_test_twice', None)
