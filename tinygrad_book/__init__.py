"""tinygrad_book: ML-systems machinery built from scratch, one chapter per module.

Chapters load on first use (PEP 562), so `import tinygrad_book` stays cheap and
`tinygrad_book.softmax.cross_entropy(...)` works without importing the chapter first.
"""
__version__ = "0.0.1"

import importlib as _importlib
from pathlib import Path as _Path


def _chapters():
    "The package's public modules: every `*.py` beside this file whose name does not start with '_'."
    return sorted(p.stem for p in _Path(__file__).parent.glob('*.py') if not p.stem.startswith('_'))


def __getattr__(name):
    "Import a chapter's module the first time it is looked up as an attribute of the package."
    if name in _chapters():
        return _importlib.import_module(f'{__name__}.{name}')  # the import also binds it on the package
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_chapters()))
