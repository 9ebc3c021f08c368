"""The project is self-contained: every document a docstring or README cites is in the repository."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
CITED = re.compile(r'(\S*)(PROTOCOLS|CONTRACT)(\.md)?')


def _sources():
  for pattern in ('jaxtransfer/**/*.py', 'configs/*.py', 'benchmarks/*', 'launch/**/*',
                  'results/**/*.md', '*.md', 'docs/*.md'):
    yield from (p for p in ROOT.glob(pattern) if p.is_file())


def test_every_cited_protocol_or_contract_is_docs_and_exists():
  cited = set()
  for path in _sources():
    for line_no, line in enumerate(path.read_text(errors='ignore').splitlines(), 1):
      for m in CITED.finditer(line):
        where = f'{path.relative_to(ROOT)}:{line_no}: {line.strip()}'
        assert m[3] and m[1].endswith('docs/') or path.parent.name == 'docs', where
        cited.add(m[2])
  assert cited == {'PROTOCOLS', 'CONTRACT'}
  for name in cited:
    assert (ROOT / 'docs' / f'{name}.md').stat().st_size > 1000


def test_protocols_cover_the_four_studies():
  text = (ROOT / 'docs' / 'PROTOCOLS.md').read_text()
  for study in ('Tamkin', 'Lee', 'Xie', 'Radiya-Dixit'):
    assert study in text
