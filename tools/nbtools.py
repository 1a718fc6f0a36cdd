"""Notebook-cell helpers shared by tools/readme.py, tools/build_site.py and tools/run_nbs.py (stdlib only).

    from nbtools import src, directives   # the scripts' own folder, tools/, is on sys.path

`src(cell)` is a cell's source as one string. `directives(code)` parses the `#|` lines at
the top of a code cell: nbdev flags (`#| export`, `#| hide`, `#| cuda`, ...) and Quarto
options (`#| echo: false`, `#| fig-cap: "..."`). The callers differ in which lines may sit
in that block and in what they use, so the block's extent is chosen by arguments and the
result carries everything any of them needs (see `Directives`).
"""
import re
from typing import NamedTuple

# A directive line: `#|` after optional indentation; group 1 is the rest of the line.
DIRECTIVE = re.compile(r'\s*#\|\s*(.*)$')
# The same, also accepting blanks between `#` and `|` (`# | hide`).
SPACED_DIRECTIVE = re.compile(r'\s*#\s*\|\s*(.*)$')
# A Quarto option, `key: value`, as opposed to an nbdev flag such as `export` or `hide`.
OPTION = re.compile(r'([\w-]+)\s*:\s*(.*)$')
BLANKS = ('stop', 'before-directive', 'skip')


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


def directives(code, blanks='stop', spaced=False):
    """Parse the leading `#|` directive lines of a code cell's source `code` into a `Directives`.

    The block is the run of directive lines at the top of the cell; `blanks` says what a
    blank (empty or whitespace-only) line does there:
      'stop'              it ends the block (it and what follows are code);
      'before-directive'  it is skipped when the very next line is a directive, else it ends the block;
      'skip'              it is always skipped: the block ends at the first other non-directive line.
    Skipped blank lines are not part of `code`. `spaced=True` also takes `# |` (blanks between
    `#` and `|`) for a directive; by default only `#|` is one. A directive with a word, optional
    blanks and a colon first (`key: value`) is an option; any other non-empty one is a flag.
    """
    if blanks not in BLANKS: raise ValueError(f'blanks must be one of {BLANKS}, not {blanks!r}')
    pat = SPACED_DIRECTIVE if spaced else DIRECTIVE
    lines = code.split('\n')
    flags, opts, option_lines = set(), {}, []
    while lines:
        m = pat.match(lines[0])
        if not m:
            if lines[0].strip(): break
            if blanks == 'stop': break
            if blanks == 'before-directive' and not (len(lines) > 1 and pat.match(lines[1])): break
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
