"""Notebook-cell helpers shared by tools/readme.py, tools/build_site.py and tools/run_nbs.py (stdlib only).

    from nbtools import src, directives, hidden   # the scripts' own folder, tools/, is on sys.path

`src(cell)` is a cell's source as one string. `directives(code)` parses the `#|` lines at
the top of a code cell: nbdev flags (`#| export`, `#| hide`, `#| cuda`, ...) and Quarto
options (`#| echo: false`, `#| fig-cap: "..."`). `hidden(d)` says whether the README and the
site leave such a cell out, so both hide the same cells.
"""
import re
from typing import NamedTuple

# A directive line: `#|` (or `# |`) after optional indentation; group 1 is the rest of the line.
DIRECTIVE = re.compile(r'\s*#\s*\|\s*(.*)$')
# A Quarto option, `key: value`, as opposed to an nbdev flag such as `export` or `hide`.
OPTION = re.compile(r'([\w-]+)\s*:\s*(.*)$')
# Cells the book never shows: nbdev's hidden and export-only cells, and nbdev plumbing.
HIDE_FLAGS = {'hide', 'exporti', 'default_exp'}
PLUMBING = re.compile(r'^\s*(from\s+nbdev\b|import\s+nbdev\b)|nbdev_export\s*\(', re.M)


def src(cell):
    "A notebook cell's source as one string (nbformat stores a string or a list of lines)."
    s = cell.get('source', '')
    return ''.join(s) if isinstance(s, list) else s


class Directives(NamedTuple):
    "What `directives` found at the top of a cell."
    flags: set          # nbdev flags: the first word of each directive that is not an option ({'export', 'cuda'})
    opts: dict          # Quarto options: key -> value stripped of blanks and quotes, lower-cased ({'echo': 'false'});
                        # a key given twice keeps its last value
    option_lines: list  # the option directives as written, less the `#|` and outer blanks, in order ('fig-cap: "A B"')
    code: str           # the lines after the directive block, joined with '\n', not stripped


def directives(code):
    """Parse the leading directive lines (`#|` or `# |`) of a code cell's source `code` into a `Directives`.

    The block is the run of directive lines at the top of the cell; a blank line inside it is skipped when a
    directive follows, and otherwise ends it. A directive with a word, optional blanks and a colon first
    (`key: value`) is an option; any other non-empty one is a flag.
    """
    lines = code.split('\n')
    flags, opts, option_lines = set(), {}, []
    while lines:
        m = DIRECTIVE.match(lines[0])
        if not m:
            if lines[0].strip() or not (len(lines) > 1 and DIRECTIVE.match(lines[1])): break
            lines.pop(0)
            continue
        lines.pop(0)
        d = m.group(1).strip()
        o = OPTION.match(d)
        if o:
            opts[o.group(1)] = o.group(2).strip().strip('"\'').lower()
            option_lines.append(d)
        elif d: flags.add(d.split()[0])
    return Directives(flags, opts, option_lines, '\n'.join(lines))


def hidden(d: Directives) -> bool:
    "Is a code cell with these directives left out of the README and the site?"
    return bool(d.flags & HIDE_FLAGS) or d.opts.get('include') == 'false' or bool(PLUMBING.search(d.code))
