"""The book's website: build it with tools/build_site.py (offline: quarto if present, else smalldocs)
into a temporary folder and check its pages, links, images and that no nbdev plumbing shows."""
import json, os, posixpath, re, subprocess, sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / 'nbs'
sys.path.insert(0, str(ROOT / 'tools'))
import build_site  # noqa: E402

FORBIDDEN = ['#| export', '#|export', '#| hide', '#|hide', '#| default_exp', '#|default_exp',
             '#| exporti', 'from nbdev', 'import nbdev', 'nbdev_export()']
LINK_ATTRS = {'a': 'href', 'link': 'href', 'img': 'src', 'script': 'src', 'source': 'src', 'iframe': 'src', 'embed': 'src'}


class Page(HTMLParser):
    "The ids, links, images and visible text (code included, scripts and styles left out) of one page."
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids, self.links, self.imgs, self.text, self._skip = set(), [], [], [], 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in ('id', 'name' if tag == 'a' else None):
            if k and a.get(k): self.ids.add(a[k])
        if tag in LINK_ATTRS and a.get(LINK_ATTRS[tag]) is not None:
            self.links.append((tag, a[LINK_ATTRS[tag]]))
        if tag == 'img': self.imgs.append(a.get('src') or '')
        if tag == 'svg': self.imgs.append('inline-svg')
        if tag in ('script', 'style'): self._skip += 1

    def handle_endtag(self, tag):
        if tag in ('script', 'style') and self._skip: self._skip -= 1

    def handle_data(self, data):
        if not self._skip: self.text.append(data)


def parse(path):
    p = Page(); p.feed(path.read_text(encoding='utf-8')); p.close()
    p.text = ''.join(p.text)
    return p


def chapters():
    return sorted(n for n in NBS.glob('*.ipynb') if not n.name.startswith(('_', '.')) and n.stem != 'index')


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('site')
    out = tmp / '_site'
    r = subprocess.run([sys.executable, str(ROOT / 'tools' / 'build_site.py'), '--out', str(out), '--proc', str(tmp / '_proc'), '-q'],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f'build_site failed:\n{r.stdout}\n{r.stderr}'
    assert r.stdout.strip().splitlines()[-1] == str(out / 'index.html'), r.stdout
    pages = {p.relative_to(out).as_posix(): parse(p) for p in out.rglob('*.html')}
    return out, pages


def test_front_page_and_chapters_exist(site):
    out, pages = site
    assert 'index.html' in pages
    missing = [f'{nb.stem}.html' for nb in chapters() if f'{nb.stem}.html' not in pages]
    assert not missing, f'chapter pages not built: {missing}'


def test_sidebar_lists_every_chapter(site):
    "Every notebook in nbs/ is linked from the front page (its sidebar comes from _quarto.yml)."
    out, pages = site
    linked = {posixpath.normpath(unquote(urlsplit(h).path)) for t, h in pages['index.html'].links if t == 'a' and h}
    missing = [nb.name for nb in chapters() if f'{nb.stem}.html' not in linked]
    assert not missing, f'add these notebooks to the sidebar in _quarto.yml: {missing}'


def resolve(out, page, url, pages):
    "None if `url` on `page` resolves, else why not."
    if url.startswith('data:') or re.match(r'^[a-zA-Z][a-zA-Z0-9+.-]*:', url) or url.startswith('//'): return None
    parts = urlsplit(url)
    path, frag = unquote(parts.path), unquote(parts.fragment)
    if not path: target = page
    else:
        target = posixpath.normpath(path.lstrip('/') if path.startswith('/') else posixpath.join(posixpath.dirname(page), path))
        if target.startswith('..'): return 'outside the site'
        f = out / target
        if f.is_dir() or path.endswith('/'): target = posixpath.join(target, 'index.html'); f = out / target
        if not f.is_file(): return 'no such file'
    if frag and target.endswith('.html') and target in pages and frag not in pages[target].ids:
        return f'no element with id "{frag}" in {target}'
    return None


def test_internal_links_and_images_resolve(site):
    out, pages = site
    broken = []
    for name, p in pages.items():
        for tag, url in p.links:
            if not url or url == '#' or url.startswith('javascript:'): continue
            if tag != 'a' and url.startswith('#'): continue
            why = resolve(out, name, url, pages)
            if why: broken.append(f'{name}: <{tag}> {url} ({why})')
        for src in p.imgs:
            if src == 'inline-svg': continue
            why = 'empty src' if not src else resolve(out, name, src, pages)
            if why: broken.append(f'{name}: <img> {src[:80]} ({why})')
    assert not broken, 'broken links:\n' + '\n'.join(broken)


def test_no_nbdev_plumbing_shows(site):
    out, pages = site
    found = [f'{name}: {s!r}' for name, p in pages.items() for s in FORBIDDEN if s in p.text]
    assert not found, 'nbdev directives or plumbing in the rendered pages:\n' + '\n'.join(found)


# What a reader must never see on a page: a traceback, an error output, a CLI's "error:" line, a failed build.
ERROR_OUTPUT = re.compile(r'Traceback \(most recent call last\)|cell-output-error|ExtensionBuildError:|^error: |'
                          r'<pre[^>]*>(?:<code[^>]*>)?error: ', re.M)


def test_no_page_shows_error_output(site):
    out, pages = site
    bad = []
    for p in sorted(out.rglob('*.html')):
        m = ERROR_OUTPUT.search(p.read_text(encoding='utf-8'))
        if m: bad.append(f'{p.relative_to(out)}: {m.group(0)!r}')
    assert not bad, 'pages showing error output (fix the cell, rerun `make book`):\n' + '\n'.join(bad)


def test_no_notebook_carries_an_error_output():
    "The same rule at the source: no saved output of type 'error', no stderr stream starting with 'error:'."
    bad = []
    for nb in sorted(NBS.glob('*.ipynb')):
        for i, c in enumerate(json.loads(nb.read_text(encoding='utf-8'))['cells']):
            for o in c.get('outputs', []):
                text = ''.join(o.get('text', '')) if o.get('output_type') == 'stream' else ''
                if o.get('output_type') == 'error' or re.search(r'^error: |Traceback \(most recent', text, re.M):
                    bad.append(f'{nb.name} cell {i}')
    assert not bad, 'notebooks saved with error outputs:\n' + '\n'.join(bad)


def test_every_page_links_to_the_repository(site):
    import yaml
    repo = yaml.safe_load((ROOT / '_quarto.yml').read_text(encoding='utf-8'))['website']['repo-url'].rstrip('/')
    out, pages = site
    missing = [name for name, p in pages.items() if name.endswith('.html') and name != '404.html'
               and not any(t == 'a' and h.startswith(repo) for t, h in p.links)]
    assert not missing, f'pages without a link to {repo}: {missing}'


@pytest.mark.skipif(not (NBS / '04_softmax.ipynb').exists(), reason='nbs/04_softmax.ipynb not written yet')
def test_softmax_chapter_has_a_figure(site):
    out, pages = site
    assert pages['04_softmax.html'].imgs, ('04_softmax.html has no figure: run `make book` '
                                           'and commit nbs/04_softmax.ipynb with its outputs')


def _nb(*cells):
    mk = lambda kind, s: dict(cell_type=kind, id=f'c{abs(hash(s)) % 10**8}', metadata={}, source=s,
                              **(dict(outputs=[], execution_count=None) if kind == 'code' else {}))
    return dict(cells=[mk(*c) for c in cells], metadata={}, nbformat=4, nbformat_minor=5)


def test_processing_turns_nbdev_directives_into_quarto(tmp_path):
    nb = tmp_path / 'x.ipynb'
    nb.write_text(json.dumps(_nb(('markdown', '# Title\n> Desc\n\nText'), ('code', '#| default_exp x'),
                                 ('code', '#| hide\nsecret = 1'), ('code', '#|exporti\ndef _p(): pass'),
                                 ('code', '#| export\ndef f(): pass'), ('code', '#| slow\n#| echo: false\nrun()'),
                                 ('code', '#| include: false\nhidden()'), ('code', 'import nbdev; nbdev.nbdev_export()'))))
    out = build_site.proc_nb(nb)
    srcs = [c['source'] for c in out['cells']]
    assert srcs[0].startswith('---\n') and 'title: Title' in srcs[0] and 'description: Desc' in srcs[0]
    assert srcs[1:] == ['Text', 'def f(): pass', '#| echo: false\nrun()']
