"""The package's top level: chapters load lazily on attribute access (PEP 562 `__getattr__`)."""
import subprocess, sys


def run(code):
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_bare_import_is_cheap_and_chapters_load_on_first_use():
    out = run("import sys, tinygrad_book as t\n"
              "before = 'tinygrad_book.bench' in sys.modules, 'torch' in sys.modules\n"
              "f = t.bench.format_table\n"
              "print(before, 'tinygrad_book.bench' in sys.modules, t.bench is sys.modules['tinygrad_book.bench'])")
    assert out == '(False, False) True True', out


def test_unknown_attribute_is_an_attribute_error():
    out = run("import tinygrad_book as t\n"
              "try: t.no_such_chapter\n"
              "except AttributeError as e: print(e)\n"
              "print(hasattr(t, '_modidx'), 'bench' in dir(t))")
    assert out.splitlines() == ["module 'tinygrad_book' has no attribute 'no_such_chapter'", 'False True'], out
