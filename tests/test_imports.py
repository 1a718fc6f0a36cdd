"""tinygrad_book.imports against CPython 3.11's own import system.

Differential tests: each scenario writes a package tree in a temporary directory and runs the same list of steps in two
fresh interpreters, one importing with CPython's importlib and one with ours (`compare_with_cpython`); after every step
the exception (type, message, `.name`), the new `sys.modules` keys *in order*, the modules' side-effect log, and each
module's `__name__`, `__package__`, `__file__`, `__cached__`, `__path__`, `__spec__` (name, origin, parent,
submodule_search_locations, has_location, cached) and bound names must be identical. Steps that do not interfere share
one interpreter, so a whole tree costs two subprocesses.

The profiler is checked against `python -X importtime` (same set of modules, fresh interpreters), and the in-process
pieces (hooks, lazy import, argument checks) against CPython's functions where CPython has one.
"""
import os, subprocess, sys, textwrap, threading, time, traceback, types
import importlib, importlib.util
import pytest
from hypothesis import given, settings, strategies as st

from tinygrad_book import imports as I

PY = sys.executable
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def assert_same_as_cpython(root, steps, path=None, expect_errors=None):
    diffs, cpy, ours = I.compare_with_cpython(root, steps, path)
    msg = '\n'.join(f"step {s!r}: {field}\n  cpython: {c}\n  ours:    {o}" for s, field, c, o in diffs[:10])
    assert not diffs, f"{len(diffs)} differences from CPython:\n{msg}"
    if expect_errors is not None:  # the scenario really exercises what it claims to (not a test that cannot fail)
        got = [r['error'] and r['error'][0] for r in cpy]
        assert got == expect_errors, [(r["step"], r["error"]) for r in cpy]
    return cpy


# ----------------------------------------------------------------------------------------------- differential trees
REGULAR = {
    'reg/__init__.py': "from . import a\nX = 1\n",
    'reg/a.py': "from .b import B\nA = 1\n",
    'reg/b.py': "B = 2\n",
    'reg/sub/__init__.py': "from .. import a as parent_a\n",
    'reg/sub/deep.py': "from ..a import A\nfrom .. import X\nfrom . import sibling\n",
    'reg/sub/sibling.py': "import reg.sub\nS = 'sibling'\n",
    'reg/beyond.py': "from ... import x\n",
    'reg/star.py': "from .stars import *\n",
    'reg/stars/__init__.py': "__all__ = ['one', 'two', 'VALUE']\nVALUE = 3\n",
    'reg/stars/one.py': "", 'reg/stars/two.py': "",
    'reg/badall/__init__.py': "__all__ = ['ok', 7]\n", 'reg/badall/ok.py': "",
    'reg/missing_name.py': "from . import not_there\n",
    'reg/notpkg.py': "Y = 1\n",
    'top.py': "import reg.sub.deep\nimport reg.notpkg as np\nresult = np.Y\n",
}

def test_regular_packages_init_order_and_relative_imports(tmp_path):
    I.write_tree(tmp_path, REGULAR, log=True)
    steps = [
        "import reg",                                         # __init__ runs first, children in import order
        "import reg.sub.deep as d; result = (d.A, d.X, d.sibling.S, reg.sub.parent_a.__name__)",
        "import top",
        "from reg.stars import *; result = sorted(k for k in dir() if k in ('one', 'two', 'VALUE'))",
        "from reg import star; result = star.VALUE",
        "import_module('reg.beyond')",                        # beyond the top-level package
        "from reg.badall import *",                           # non-str in __all__
        "import reg.missing_name",                            # from . import <not a submodule>
        "import reg.notpkg.x",                                # parent is a module, not a package
        "import reg.nope",
        "import nope_at_all",
        "from reg import nope",
        "from . import q",                                    # relative import outside a package
        "result = import_module('..a', 'reg.sub').__name__",
        "import_module('....a', 'reg.sub')",
        "import_module('.a')",
        "import_module('')",
        "result = resolve_name('...x', 'reg.sub.deep')",
    ]
    assert_same_as_cpython(tmp_path, steps, expect_errors=[
        None, None, None, None, None, 'ImportError', 'TypeError', 'ImportError', 'ModuleNotFoundError',
        'ModuleNotFoundError', 'ModuleNotFoundError', 'ImportError', 'ImportError', None, 'ImportError', 'TypeError',
        'ValueError', None])


def test_the_ours_run_really_uses_our_machinery(tmp_path):
    "Guards the differential tests against comparing CPython with itself."
    I.write_tree(tmp_path, {'probe/__init__.py': "", 'probe/mod.py': "", 'nsprobe/x.py': ""})
    step = ("import builtins, probe.mod, nsprobe.x; result = (builtins.__import__.__module__, "
            "type(probe.mod.__loader__).__module__, type(nsprobe.__path__).__module__)")
    ours, = I.run_scenario(tmp_path, [step], mode='ours')
    cpy, = I.run_scenario(tmp_path, [step], mode='cpython')
    assert ours['result'] == repr(('tinygrad_book.imports',) * 3)
    assert cpy['result'] == repr(('builtins', '_frozen_importlib_external', '_frozen_importlib_external'))


def test_namespace_packages_across_path_entries(tmp_path):
    files = {
        'd1/ns/p1.py': "P = 1\n",
        'd1/ns/inner/i1.py': "",                              # a namespace package inside a namespace package
        'd2/ns/p2.py': "P = 2\n",
        'd2/ns/inner/i2.py': "",
        'late/ns/p3.py': "P = 3\n",                           # appended to sys.path after the first import
        'd1/mixed/__init__.py': "",                           # a regular package wins over a namespace portion...
        'd2/mixed/m.py': "",                                  # ...so this portion is never part of it
        'd1/shadow/x.py': "", 'd2/shadow.py': "SHADOW = 'module'\n",  # a module later on the path beats a portion
        'd1/same.py': "W = 'file'\n", 'd1/same/__init__.py': "W = 'package'\n",  # package before module, same dir
        'd2/emptyns/.keep': "",
    }
    I.write_tree(tmp_path, files, log=True)
    late = repr(str(tmp_path / 'late'))
    steps = [
        "import ns.p1, ns.p2; result = (ns.p1.P, ns.p2.P, ns.__file__, type(ns.__path__).__name__ != 'list')",
        "import ns.inner.i1, ns.inner.i2",
        "import ns.p3",                                       # not there yet
        f"import sys; sys.path.append({late}); import ns.p3; result = ns.p3.P",  # the namespace path is dynamic
        "import mixed; import mixed.m",
        "import shadow; result = shadow.SHADOW",
        "import same; result = same.W",
        "import emptyns; result = emptyns.__file__",
        "run_module('ns')",                                   # -m on a namespace package
    ]
    assert_same_as_cpython(tmp_path, steps, path=[tmp_path / 'd1', tmp_path / 'd2'], expect_errors=[
        None, None, 'ModuleNotFoundError', None, 'ModuleNotFoundError', None, None, None, 'ImportError'])


def test_sys_modules_cache_poisoning_failures_and_circular_imports(tmp_path):
    files = {
        'cache/__init__.py': "", 'cache/sub.py': "",
        'fails/__init__.py': "", 'fails/boom.py': "import fails.ok\nraise RuntimeError('boom at import')\n",
        'fails/ok.py': "",
        'replaces.py': "import sys, types\nsys.modules[__name__] = types.SimpleNamespace(replaced=True)\n",
        'circ/__init__.py': "", 'circ/a.py': "import circ.b\nA = 1\n", 'circ/b.py': "import circ.a\nB = circ.a\n",
        'circ/x.py': "from circ.y import Y\nX = 1\n", 'circ/y.py': "from circ.x import X\nY = 1\n",
        'circ/p.py': "from . import q\nP = 1\n", 'circ/q.py': "from circ import p\nQ = 1\n",
        'circ/r.py': "from .s import S\nR = 1\n", 'circ/s.py': "import circ.r\nS = 1\n",
        'counter.py': "import builtins\nbuiltins._N = getattr(builtins, '_N', 0) + 1\n",
    }
    I.write_tree(tmp_path, files, log=True)
    steps = [
        "import counter, counter; result = __import__('builtins')._N",   # the second import is a cache hit
        "import sys; sys.modules['poisoned'] = None; import poisoned",
        "import sys; sys.modules['cache.sub'] = None; import cache.sub",
        "import sys; from cache import sub",
        "import sys; del sys.modules['cache.sub']; from cache import sub; result = sub.__name__",
        "import fails.boom",                                  # removed from sys.modules, not bound on the parent
        "import fails.boom",                                  # executed again, fails again
        "import fails; result = hasattr(fails, 'boom')",
        "import replaces; result = replaces",
        "import circ.a",                                      # circ.b reads circ.a while it is being imported
        "import circ.x",                                      # from-import of a partially initialised module
        "import circ.p; result = circ.q.Q",
        "import circ.r; result = (circ.r.R, circ.s.S)",
    ]
    assert_same_as_cpython(tmp_path, steps, expect_errors=[
        None, 'ModuleNotFoundError', 'ModuleNotFoundError', 'ModuleNotFoundError', None, 'RuntimeError',
        'RuntimeError', None, None, 'AttributeError', 'ImportError', None, None])


def test_bytecode_only_encodings_and_zip_archives(tmp_path):
    "A .pyc without source (ours), a latin-1 source with a coding line (ours), a zip archive on sys.path (delegated)."
    import py_compile, zipfile
    I.write_tree(tmp_path, {'src/compiled_only.py': "_LOG.append(('enter', __name__))\nC = 'from pyc'\n", 'src/pkgz/__init__.py': ""})
    py_compile.compile(str(tmp_path / 'src/compiled_only.py'), cfile=str(tmp_path / 'src/compiled_only.pyc'), doraise=True)
    (tmp_path / 'src/compiled_only.py').unlink()
    (tmp_path / 'src/latin.py').write_bytes("# -*- coding: latin-1 -*-\nWORD = 'caf\u00e9'\n".encode('latin-1'))
    with zipfile.ZipFile(tmp_path / 'bundle.zip', 'w') as z:
        z.writestr('zipped/__init__.py', "Z = 1\n"); z.writestr('zipped/inner.py', "from . import Z\nI = Z + 1\n")
    steps = ["import compiled_only; result = compiled_only.C", "import latin; result = latin.WORD",
             "import zipped.inner; result = zipped.inner.I", "import zipped.nope"]
    assert_same_as_cpython(tmp_path, steps, path=[tmp_path / 'src', tmp_path / 'bundle.zip'],
                           expect_errors=[None, None, None, 'ModuleNotFoundError'])


def test_concurrent_imports_run_a_body_once(tmp_path):
    "Eight threads import the same slow package with our import_module: one execution, everyone gets the whole module."
    I.write_tree(tmp_path, {'slowpkg/__init__.py': "import time, builtins\nbuiltins._SLOWPKG = getattr(builtins, '_SLOWPKG', 0) + 1\n"
                                                   "time.sleep(0.2)\nfrom . import part\nDONE = True\n",
                            'slowpkg/part.py': "P = 1\n"})
    sys.path.insert(0, str(tmp_path))
    import builtins
    seen, barrier = [], threading.Barrier(8)
    def work():
        barrier.wait()
        try: seen.append((I.import_module('slowpkg.part').P, sys.modules['slowpkg'].DONE))
        except Exception as e: seen.append(repr(e))
    try:
        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        assert seen == [(1, True)] * 8 and builtins._SLOWPKG == 1
    finally:
        sys.path.remove(str(tmp_path))
        for k in ['slowpkg', 'slowpkg.part']: sys.modules.pop(k, None)
        if hasattr(builtins, '_SLOWPKG'): del builtins._SLOWPKG


def test_odd_corners(tmp_path):
    "__path__ extended at run time, PEP 562 __getattr__, attributes shadowing submodules, self-removal, broken parents."
    files = {
        'ext/__init__.py': "import os\n__path__.append(os.path.join(os.path.dirname(__path__[0]), 'ext_more'))\n",
        'ext_more/plugin.py': "WHERE = 'ext_more'\n",
        'lazy/__init__.py': "def __getattr__(name):\n    if name == 'virtual': return 'made up'\n    raise AttributeError(name)\n",
        'lazy/real.py': "",
        'shadow/__init__.py': "sub = 'an attribute'\n", 'shadow/sub.py': "KIND = 'module'\n",
        'vanish.py': "import sys\ndel sys.modules[__name__]\n",
        'badparent/__init__.py': "raise KeyError('parent broke')\n", 'badparent/child.py': "",
        'colorsys.py': "SHADOWED = True\n",                         # a local file shadows the stdlib module
        'mod_from.py': "X = 1\n",
        'Upper.py': "",
    }
    I.write_tree(tmp_path, files, log=True)
    steps = [
        "import ext.plugin; result = (ext.plugin.WHERE, len(ext.__path__))",
        "from lazy import virtual, real; result = (virtual, real.__name__)",
        "from lazy import nothing_at_all",
        "from shadow import sub; result = sub",
        "import shadow.sub; result = (shadow.sub.KIND, sub)",
        "import vanish",
        "import badparent.child",
        "import badparent.child",
        "import colorsys; result = colorsys.SHADOWED",
        "from mod_from import X; m = __import__('mod_from', fromlist=['nothing']); result = (X, m.__name__)",
        "import upper",
        "import Upper; result = Upper.__name__",
    ]
    assert_same_as_cpython(tmp_path, steps, expect_errors=[
        None, None, 'ImportError', None, None, 'KeyError', 'KeyError', 'KeyError', None, None, 'ModuleNotFoundError', None])


def test_main_and_run_module(tmp_path):
    files = {
        'app/__init__.py': "", 'app/__main__.py': "import sys\n_LOG.append((__name__, __package__, __spec__.name, sys.argv[0]))\n",
        'app/cli.py': "import sys\nfrom . import util\n_LOG.append((__name__, __package__, __spec__.name, util.U))\n",
        'app/util.py': "U = 'u'\n",
        'nomain/__init__.py': "",
        'broken/__init__.py': "raise ValueError('broken package')\n",
        'solo.py': "_LOG.append((__name__, __spec__.name, __spec__.parent))\n",
    }
    I.write_tree(tmp_path, files, log=True)
    steps = ["run_module('app')", "run_module('app.cli')", "run_module('solo')", "run_module('nomain')",
             "run_module('missing')", "run_module('.rel')", "run_module('broken.x')", "run_module('app.__main__.x')",
             "run_module('solo.py')"]
    assert_same_as_cpython(tmp_path, steps, expect_errors=[
        None, None, None, 'ImportError', 'ImportError', 'ImportError', 'ValueError', 'ImportError', 'ImportError'])


# Random package trees: a few packages (regular or namespace, possibly nested), modules whose bodies import each
# other absolutely and relatively (sometimes beyond the top, sometimes names that do not exist, sometimes in cycles),
# some bodies raising; then every module is imported, in a random order. Two interpreters per example.
PKGS = ['pa', 'pb', 'pa.sub']
MODS = ['m1', 'm2', 'm3']

@st.composite
def random_tree(draw):
    regular = {p: draw(st.booleans()) for p in PKGS}
    modules = [f"{p}.{m}" for p in PKGS for m in MODS[:draw(st.integers(1, 3))]]
    files = {}
    for p in PKGS:
        if regular[p]:
            lines = draw(st.lists(st.sampled_from([f"from . import {m}" for m in MODS] + ["X = 1", "import pb", "from .m1 import *",
                                                   f"__all__ = {MODS[:2]!r}", "from .. import pb"]), max_size=2))
            files[p.replace('.', '/') + '/__init__.py'] = '\n'.join(lines) + '\n'
    for mod in modules:
        pkg = mod.rpartition('.')[0]
        choices = ([f"import {o}" for o in modules] + [f"from {o.rpartition('.')[0]} import {o.rpartition('.')[2]}" for o in modules]
                   + [f"from . import {m}" for m in MODS] + [f"from .. import {m}" for m in MODS] + ["from ... import zz"]
                   + [f"from {o} import NAME" for o in modules] + ["raise ValueError('boom in ' + __name__)", "import missing_mod"])
        body = draw(st.lists(st.sampled_from(choices), max_size=3))
        files[mod.replace('.', '/') + '.py'] = "NAME = __name__\n" + '\n'.join(body) + '\n'
    if not regular['pa'] and regular['pa.sub']: pass              # a regular package inside a namespace package: fine
    order = draw(st.permutations(modules))
    extra = draw(st.lists(st.sampled_from([f"import sys; sys.modules[{m!r}] = None" for m in modules]
                                          + [f"from {p} import *" for p in PKGS] + [f"import_module('.m1', {p!r})" for p in PKGS]),
                          max_size=3))
    steps = [f"import {m}" for m in order] + [f"import_module({m!r})" for m in order[:2]]
    for i, e in enumerate(extra): steps.insert(draw(st.integers(0, len(steps))), e)
    return files, steps

@settings(max_examples=8, deadline=None)
@given(random_tree())
def test_random_trees_match_cpython(tree):
    import shutil, tempfile
    files, steps = tree
    root = tempfile.mkdtemp(prefix='imports_random_')
    try:
        I.write_tree(root, files, log=True)
        assert_same_as_cpython(root, steps)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_python_dash_m_itself(tmp_path):
    "The real `python -m` against our run_module, in a clean interpreter each: the same output, __spec__ of __main__ included."
    I.write_tree(tmp_path, {
        'app/__init__.py': "print('init', __name__)\n",
        'app/__main__.py': textwrap.dedent("""\
            import sys
            print(__name__, __package__, __spec__.name, __spec__.parent, __spec__.origin == __file__, sys.argv[0])
            from . import util
            print(util.__name__, sorted(k for k in sys.modules if k.startswith('app')))
            """),
        'app/util.py': "",
    })
    env = dict(os.environ, PYTHONPATH=ROOT)
    ref = subprocess.run([PY, '-m', 'app'], cwd=tmp_path, capture_output=True, text=True, env=env)
    ours = subprocess.run([PY, '-c', "from tinygrad_book import imports as I; I.install(); I.run_module('app')"],
                          cwd=tmp_path, capture_output=True, text=True, env=env)
    assert ref.returncode == 0, ref.stderr
    assert ours.stdout == ref.stdout and ours.returncode == 0, (ref.stdout, ours.stdout, ours.stderr)
    assert 'app.__main__ app' in ref.stdout


def test_reload_and_its_zombies(tmp_path):
    I.write_tree(tmp_path, {'mod.py': "VERSION = 1\nclass K: pass\ndef f(): return VERSION\nOLD_ONLY = 1\n",
                            'pkg/__init__.py': "", 'pkg/child.py': "C = 1\n"}, log=True)
    new_source = repr("VERSION = 2\nclass K: pass\ndef f(): return VERSION\n")
    steps = [
        "import mod; from mod import f as old_f, K as OldK; k = OldK()",
        # edit the file (a newer mtime invalidates the bytecode cache), reload, then put the file back for the other run
        "import os; st = os.stat('mod.py'); old = open('mod.py').read(); open('mod.py', 'w').write(" + new_source + "); "
        "os.utime('mod.py', (st.st_mtime + 10, st.st_mtime + 10)); m2 = reload(mod); "
        "result = (m2 is mod, mod.VERSION, old_f(), mod.f is old_f, isinstance(k, mod.K), hasattr(mod, 'OLD_ONLY')); "
        "open('mod.py', 'w').write(old); os.utime('mod.py', (st.st_atime, st.st_mtime))",
        "import pkg.child; result = reload(pkg.child).C",
        "import types; reload(types.ModuleType('not_imported'))",
        "reload(42)",
    ]
    cpy = assert_same_as_cpython(tmp_path, steps, expect_errors=[None, None, None, 'ImportError', 'TypeError'])
    assert cpy[1]['result'] == repr((True, 2, 2, False, False, True))  # the zombies: old f and old K survive


# ----------------------------------------------------------------------------------------------- argument checks
BAD_IMPORT_CALLS = [
    ((1,), {}), (('x',), {'level': -1}), (('',), {}), (('x', {}, None, (), 1), {}),
    (('x', {'__package__': ''}, None, (), 1), {}), (('x', {'__package__': 3}, None, (), 1), {}),
    (('x', {'__name__': 'a'}, None, (), 1), {}), (('x', {'__package__': 'a'}, None, (), 2), {}),
    (('x', [], None, (), 1), {}), (('x', None, None, (), 1), {}), (('json',), {'fromlist': [1]}),
    (('json.nope',), {}), (('os.path.nope',), {}), (('x', {'__spec__': types.SimpleNamespace(parent=5)}, None, (), 1), {}),
]

def _outcome(fn, *args, **kw):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        try: r = fn(*args, **kw)
        except Exception as e: return (type(e).__name__, str(e), getattr(e, 'name', None))
    return ('ok', getattr(r, '__name__', r))

@pytest.mark.parametrize('args,kw', BAD_IMPORT_CALLS)
def test_dunder_import_argument_errors_match_builtin(args, kw):
    assert _outcome(I.__import__, *args, **kw) == _outcome(__import__, *args, **kw)

@pytest.mark.parametrize('name,package', [(1, None), ('.x', None), ('..x', 'a'), ('', None), ('.x', 3), ('json', None),
                                          ('..decoder', 'json.scanner'), ('os.path', None), ('os.nope', None)])
def test_import_module_argument_errors_match_importlib(name, package):
    assert _outcome(I.import_module, name, package) == _outcome(importlib.import_module, name, package)

dotted = st.lists(st.sampled_from(['a', 'b', 'pkg', 'x1']), min_size=0, max_size=4).map('.'.join)

@given(level=st.integers(0, 5), name=dotted, package=st.one_of(st.none(), dotted))
def test_resolve_name_matches_importlib(level, name, package):
    full = '.' * level + name
    assert _outcome(I.resolve_name, full, package) == _outcome(importlib.util.resolve_name, full, package)

def test_spec_of_stdlib_modules_matches_importlib():
    "Our finders on the real stdlib: the same origin, cached, parent and search locations as CPython's (and extension modules found)."
    for name in ['json', 'json.decoder', 'email.mime.text', 'sqlite3', 'xml.etree.ElementTree', 'asyncio', '_decimal',
                 'sys', 'itertools', 'zipimport']:
        parent = name.rpartition('.')[0]
        path = importlib.import_module(parent).__path__ if parent else None
        a, b = I.find_spec(name, path), importlib._bootstrap._find_spec(name, path)   # the same walk over sys.meta_path
        assert (a.name, a.origin, a.cached, a.parent, a.has_location, a.submodule_search_locations) == \
               (b.name, b.origin, b.cached, b.parent, b.has_location, b.submodule_search_locations), name
    assert type(I.find_spec('_decimal').loader).__name__ == 'ExtensionFileLoader'   # delegated
    assert type(I.find_spec('json').loader) is I.SourceFileLoader                    # ours


# ----------------------------------------------------------------------------------------------- the profiler
@pytest.mark.parametrize('module', ['email.mime.multipart', 'http.client', 'tomllib'])
def test_trace_reports_the_same_modules_as_importtime(module):
    ours, ref = I.trace_module(module), I.trace_module(module, importtime=True)
    assert len(ref) > 5                                        # a real tree, not a trivial one
    assert ours.names(importtime_only=True) == ref.names()
    for tree in (ours, ref):                                    # times are consistent: self <= cumulative, children fit
        for n in tree.nodes():
            assert 0 <= n.self_s <= n.cum_s + 1e-6
            assert sum(c.cum_s for c in n.children) <= n.cum_s + 1e-5 * (1 + len(n.children))

@pytest.mark.parametrize('module', ['asyncio', 'logging.handlers'])
def test_trace_imports_in_a_fresh_process_matches_importtime(module):
    "In-process `trace_imports()` right after importing this module: the same set as `-X importtime -c 'import M'`."
    code = (f"import json\nfrom tinygrad_book.imports import trace_imports\n"
            f"with trace_imports() as t: import {module}\nprint(json.dumps(sorted(t.names(importtime_only=True))))")
    ours = subprocess.run([PY, '-c', code], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert ours.returncode == 0, ours.stderr
    import json
    ref = I.trace_module(module, importtime=True).names()
    assert set(json.loads(ours.stdout)) == ref and 'threading' in ref


def test_trace_imports_in_process_tree(tmp_path):
    original = importlib._bootstrap._find_and_load
    I.write_tree(tmp_path, {'tp/__init__.py': "from . import a, b\n", 'tp/a.py': "import tp.c\n",
                            'tp/b.py': "import time; time.sleep(0.02)\n", 'tp/c.py': "", 'tp/d.py': ""})
    sys.path.insert(0, str(tmp_path))
    try:
        with I.trace_imports() as t:
            import tp                                                    # noqa: F401
            importlib.import_module('tp.d')                              # the Python path: -X importtime misses it
            try: import tp_missing                                       # noqa: F401
            except ImportError: pass
        tree = {n.name: [c.name for c in n.children] for n in t.nodes()}
        assert tree == {'tp': ['tp.a', 'tp.b'], 'tp.a': ['tp.c'], 'tp.b': [], 'tp.c': [], 'tp.d': [], 'tp_missing': []}
        nodes = {n.name: n for n in t.nodes()}
        assert nodes['tp.b'].self_s >= 0.018 and nodes['tp'].cum_s >= nodes['tp.b'].cum_s
        assert not nodes['tp_missing'].ok and nodes['tp.d'].via_importlib and not nodes['tp'].via_importlib
        assert t.names(importtime_only=True) == set(tree) - {'tp.d'}
        assert 'tp.b' in t.table(sort='self', min_ms=10) and 'tp.c' not in t.table(min_ms=10)
        assert [l.split()[2] for l in t.table(sort='name').splitlines()[2:-1]] == ['tp', 'tp.a', 'tp.b', 'tp.c', 'tp.d', 'tp_missing']
    finally:
        sys.path.remove(str(tmp_path))
        for k in [k for k in sys.modules if k == 'tp' or k.startswith('tp.')]: del sys.modules[k]
    assert importlib._bootstrap._find_and_load is original                             # the wrapper is gone

def test_nested_and_out_of_order_traces(tmp_path):
    "Two traces at once both see the imports; stopping them in the wrong order leaves no timer active."
    I.write_tree(tmp_path, {'n1.py': "", 'n2.py': "", 'n3.py': "", 'n4.py': ""})
    sys.path.insert(0, str(tmp_path))
    original = importlib._bootstrap._find_and_load
    try:
        outer = I._FindAndLoadTimer().start()
        import n1                                                       # noqa: F401
        inner = I._FindAndLoadTimer().start()
        import n2                                                       # noqa: F401
        outer.stop()                                                    # not LIFO: the inner wrapper is on top
        import n3                                                       # noqa: F401
        inner.stop()
        assert [e[2] for e in outer.events] == ['n1', 'n2'] and [e[2] for e in inner.events] == ['n2', 'n3']
        wrapper = importlib._bootstrap._find_and_load                  # outer's wrapper, left in place, inactive
        assert wrapper is original or wrapper.__qualname__.startswith('_FindAndLoadTimer')
        n_before = len(outer.events)
        import n4                                                       # noqa: F401  (through the stale wrapper)
        assert len(outer.events) == n_before and 'n4' in sys.modules
    finally:
        importlib._bootstrap._find_and_load = original
        sys.path.remove(str(tmp_path))
        for k in ['n1', 'n2', 'n3', 'n4']: sys.modules.pop(k, None)


def test_trace_with_imports_in_two_threads(tmp_path):
    "Events of two threads interleave; each thread's imports form their own tree."
    I.write_tree(tmp_path, {'ta/__init__.py': "import time\ntime.sleep(0.05)\nfrom . import leaf\n", 'ta/leaf.py': "",
                            'tb/__init__.py': "from . import leaf\nimport time\ntime.sleep(0.1)\n", 'tb/leaf.py': ""})
    sys.path.insert(0, str(tmp_path))
    try:
        with I.trace_imports() as t:
            th = threading.Thread(target=lambda: importlib.import_module('tb'))
            th.start(); import ta; th.join()                               # noqa: E702,F401
        assert {n.name: [c.name for c in n.children] for n in t.roots} == {'ta': ['ta.leaf'], 'tb': ['tb.leaf']}
    finally:
        sys.path.remove(str(tmp_path))
        for k in ['ta', 'ta.leaf', 'tb', 'tb.leaf']: sys.modules.pop(k, None)


def test_importtime_parser():
    text = textwrap.dedent("""\
        import time: self [us] | cumulative | imported package
        import time:        20 |         20 |     c
        import time:        30 |         50 |   b
        import time:        10 |         10 |   d
        import time:         5 |         65 | a
        some program output
        import time:         7 |          7 | e
        """)
    t = I.ImportTrace.from_importtime(text)
    assert [(n.name, n.depth, round(n.self_s * 1e6), round(n.cum_s * 1e6)) for n in t.nodes()] == [
        ('a', 0, 5, 65), ('b', 1, 30, 50), ('c', 2, 20, 20), ('d', 1, 10, 10), ('e', 0, 7, 7)]
    assert round(t.total_s * 1e6) == 72 and t.names() == set('abcde')

def test_trace_bad_input():
    t = I.ImportTrace.from_importtime('import time: 1 | 1 | a')
    with pytest.raises(ValueError, match="sort must be one of.*got 'fast'"): t.table(sort='fast')
    with pytest.raises(ValueError, match='min_ms must be a number >= 0, got -1'): t.table(min_ms=-1)
    with pytest.raises(ValueError, match="module must be an absolute dotted module name.*got '.x'"): I.trace_module('.x')
    with pytest.raises(ImportError, match='no_such_module_xyz'): I.trace_module('no_such_module_xyz')

def test_cli(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    run = lambda *a, **kw: subprocess.run([PY, '-m', 'tinygrad_book.imports', *a], capture_output=True, text=True, env=env, **kw)
    r = run('trace', 'json', '--min-ms', '0', '--sort', 'tree', '--plot', str(tmp_path / 'j.png'))
    assert r.returncode == 0, r.stderr
    assert 'json.decoder' in r.stdout and '5 modules' in r.stdout and (tmp_path / 'j.png').stat().st_size > 1000
    raw = subprocess.run([PY, '-X', 'importtime', '-c', 'import tomllib'], capture_output=True, text=True).stderr
    (tmp_path / 'it.txt').write_text(raw)
    r = run('trace', '--input', str(tmp_path / 'it.txt'), '--min-ms', '0', '--sort', 'self', '--limit', '3')
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 1 + 2 + 3 + 1, r.stdout   # repr, header, 3 rows, total
    selfs = [float(l.split()[0]) for l in r.stdout.splitlines()[3:6]]
    assert selfs == sorted(selfs, reverse=True)
    r = run('trace', '--input', str(tmp_path / 'it.txt'), '--min-ms', '0', '--sort', 'tree')
    assert r.returncode == 0 and '\n' + ' ' * 6 + 'tomllib._parser' not in r.stdout and 'tomllib._parser' in r.stdout
    r = run('trace', '--input', '-', '--min-ms', '0', input='import time: 5000 | 5000 | zz\n')
    assert r.returncode == 0 and 'zz' in r.stdout
    r = run('trace', 'no_such_module_xyz')
    assert r.returncode == 1 and 'no_such_module_xyz' in r.stderr
    r = run('trace', 'json', '--min-ms', '-2')
    assert r.returncode == 2 and '--min-ms must be >= 0' in r.stderr


# ----------------------------------------------------------------------------------------------- lazy import
SLOW_MODULE = "import time\ntime.sleep(0.3)\nVALUE = 42\n"

def _race(module, n=8):
    "n threads read module.VALUE at once; return what each saw (a value or an exception name)."
    seen, barrier = [], threading.Barrier(n)
    def read():
        barrier.wait()
        try: seen.append(module.VALUE)
        except Exception as e: seen.append(type(e).__name__)
    threads = [threading.Thread(target=read) for _ in range(n)]
    for t in threads: t.start()
    for t in threads: t.join()
    return seen

def test_lazy_import_runs_on_first_access_and_is_thread_safe(tmp_path):
    I.write_tree(tmp_path, {'slowmod.py': SLOW_MODULE + "import builtins\nbuiltins._SLOW_RUNS = getattr(builtins, '_SLOW_RUNS', 0) + 1\n",
                            'lazypkg/__init__.py': "", 'lazypkg/leaf.py': "import builtins\nbuiltins._LEAF = 1\nL = 'leaf'\n"})
    sys.path.insert(0, str(tmp_path))
    import builtins
    try:
        t0 = time.perf_counter()
        m = I.lazy_import('slowmod')
        assert time.perf_counter() - t0 < 0.2 and not hasattr(builtins, '_SLOW_RUNS')   # nothing ran yet
        assert _race(m) == [42] * 8 and builtins._SLOW_RUNS == 1                      # every thread waited for it
        leaf = I.lazy_import('lazypkg.leaf')
        assert not hasattr(builtins, '_LEAF') and sys.modules['lazypkg'].leaf is leaf
        assert leaf.L == 'leaf' and builtins._LEAF == 1
        with pytest.raises(ModuleNotFoundError, match="No module named 'no_such_lazy'"): I.lazy_import('no_such_lazy')
        with pytest.raises(TypeError, match='name must be a str, got int'): I.lazy_import(3)
    finally:
        sys.path.remove(str(tmp_path))
        for k in ['slowmod', 'lazypkg', 'lazypkg.leaf']: sys.modules.pop(k, None)
        for k in ['_SLOW_RUNS', '_LEAF']:
            if hasattr(builtins, k): delattr(builtins, k)


# ----------------------------------------------------------------------------------------------- hooks
def test_import_watcher_logs_the_search_order(tmp_path):
    I.write_tree(tmp_path, {'wpkg/__init__.py': "from . import a\n", 'wpkg/a.py': "import wpkg.b\n", 'wpkg/b.py': ""})
    sys.path.insert(0, str(tmp_path))
    try:
        with I.ImportWatcher() as w: import wpkg                    # noqa: F401
        assert [n for n, _ in w.log] == ['wpkg', 'wpkg.a', 'wpkg.b']
        assert w.log[0][1] is None and w.log[1][1] == [str(tmp_path / 'wpkg')]
        assert w not in sys.meta_path
    finally:
        sys.path.remove(str(tmp_path))
        for k in ['wpkg', 'wpkg.a', 'wpkg.b']: sys.modules.pop(k, None)

def _check_source_importer(importer, prefix):
    with importer:
        pkg = I.import_module(f'{prefix}')
        assert pkg.sub.helper() == 'helped' and pkg.__path__ == [] and pkg.__package__ == prefix
        mod = importlib.import_module(f'{prefix}.fails')             # CPython's import finds it too (meta_path)
        with pytest.raises(ZeroDivisionError) as e: mod.divide()
        tb = ''.join(traceback.format_exception(e.value))
        assert 'return 1 / 0  # the line shown' in tb               # get_source feeds linecache
        assert importer.get_source(f'{prefix}.sub').startswith('from . import')
        with pytest.raises(ModuleNotFoundError): I.import_module(f'{prefix}.absent')
    assert importer not in sys.meta_path
    for k in [k for k in sys.modules if k.startswith(prefix)]: del sys.modules[k]

SOURCES = lambda p: {p: "from . import sub\n", f'{p}.sub': "from . import helpers\ndef helper(): return helpers.WORD\n",
                     f'{p}.helpers': "WORD = 'helped'\n", f'{p}.fails': "def divide():\n    return 1 / 0  # the line shown\n"}

def test_dict_importer():
    _check_source_importer(I.DictImporter(SOURCES('dictpkg')), 'dictpkg')
    with pytest.raises(TypeError, match='sources must be a dict of name -> source, got list'): I.DictImporter([])

def test_sqlite_importer(tmp_path):
    db = I.SQLiteImporter.create(str(tmp_path / 'mods.db'), SOURCES('sqlpkg'))
    imp = I.SQLiteImporter(db)
    _check_source_importer(imp, 'sqlpkg')
    imp.close()
    with pytest.raises(FileNotFoundError, match='is not a file'): I.SQLiteImporter(str(tmp_path / 'missing.db'))

def test_when_imported_runs_after_the_body(tmp_path):
    I.write_tree(tmp_path, {'hooked.py': "import builtins\nbuiltins._HOOKED_BODY = True\nVALUE = 1\n"})
    sys.path.insert(0, str(tmp_path))
    seen = []
    try:
        I.when_imported('hooked', lambda m: seen.append(('first', m.VALUE)))
        I.when_imported('hooked', lambda m: seen.append(('second', m.__loader__)))
        assert seen == [] and 'hooked' not in sys.modules              # registering imports nothing
        import hooked                                                  # noqa: F401  (CPython's import statement)
        assert seen[0] == ('first', 1) and seen[1][0] == 'second'
        assert type(seen[1][1]).__name__ == 'SourceFileLoader' and hooked.__spec__.loader is seen[1][1]  # real loader kept
        I.when_imported('hooked', lambda m: seen.append('now'))        # already imported: called at once
        assert seen[-1] == 'now' and len(seen) == 3
    finally:
        sys.path.remove(str(tmp_path)); sys.modules.pop('hooked', None)


def test_auto_installer_never_installs_in_tests(tmp_path):
    with I.AutoInstaller() as dry:                                   # default: records the pip command, installs nothing
        with pytest.raises(ModuleNotFoundError, match="No module named 'surely_not_installed_pkg'"):
            I.import_module('surely_not_installed_pkg')
    assert dry.requests == [f"{sys.executable} -m pip install surely_not_installed_pkg"]
    site = tmp_path / 'site'; site.mkdir()
    def fake_install(name):                                          # "installs" by writing a module where sys.path looks
        (site / f'{name}.py').write_text("INSTALLED = True\n")
        return True
    sys.path.insert(0, str(site))
    try:
        with I.AutoInstaller(install=fake_install, allowed={'fake_dep'}):
            assert importlib.import_module('fake_dep').INSTALLED         # through CPython's import statement path
            with pytest.raises(ModuleNotFoundError): I.import_module('not_allowed_dep')
        assert not (site / 'not_allowed_dep.py').exists()
    finally:
        sys.path.remove(str(site)); sys.modules.pop('fake_dep', None)


def test_write_tree_bad_input(tmp_path):
    with pytest.raises(ValueError, match="files keys must be relative paths inside root, got '../x.py'"):
        I.write_tree(tmp_path, {'../x.py': ''})
    with pytest.raises(ValueError, match="mode must be 'cpython' or 'ours', got 'pypy'"):
        I.run_scenario(tmp_path, ['pass'], mode='pypy')


def test_module_import_is_light():
    "Importing the chapter's module loads nothing beyond the interpreter's start-up set (no torch, no threading):"
    "whatever a traced import loads is then seen by the trace."
    code = "import sys; before = set(sys.modules); import tinygrad_book.imports; print(sorted(set(sys.modules) - before))"
    r = subprocess.run([PY, '-c', code], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.stdout.strip() == "['tinygrad_book', 'tinygrad_book.imports']", (r.stdout, r.stderr)


def test_benchmark_quick_mode():
    r = subprocess.run([PY, '-m', 'tinygrad_book.bench', 'imports', '--quick', '--repeats', '2'], capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
    assert r.returncode == 0, r.stderr
    assert 'trace_imports' in r.stdout and 'our import machinery' in r.stdout
