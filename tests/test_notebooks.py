"""One pytest test per notebook: each runs top to bottom as `nbdev_test` runs it (cells flagged `slow`/`notest`
skipped), and what it displays must be saved in the committed notebook.

A reader on the repository page sees only the saved outputs, so a notebook edited without being re-executed
(`.ci/execute_nbs.py NAME`) fails here: every cell that prints, shows a value or draws a picture when run must have
an output of that kind saved, and no saved output may be an error.
"""
import json, os, sys
from pathlib import Path
import pytest
from execnb.shell import CaptureShell
from fastcore.xtras import working_directory
from nbdev.config import get_config
from nbdev.frontmatter import FrontmatterProc
from nbdev.process import NBProcessor

ROOT = Path(__file__).resolve().parents[1]
NBS = sorted(p for p in (ROOT/'nbs').rglob('*.ipynb') if '.ipynb_checkpoints' not in p.parts)


def output_kinds(outputs) -> set:
    "What a cell shows, by kind: printed text, a value or table, a picture, an error (stderr is not counted: warnings and progress bars come and go)."
    kinds = set()
    for o in outputs:
        t = o.get('output_type')
        if t == 'stream' and o.get('name') == 'stdout' and o.get('text'): kinds.add('printed text')
        elif t == 'error': kinds.add('an error')
        elif t in ('execute_result', 'display_data'):
            data = o.get('data', {})
            kinds.add('a picture' if any(k.startswith('image/') for k in data) else 'a value')
    return kinds


def skipped(cell, flags) -> bool:
    "The cells `nbdev_test` does not run: markdown, `nbdev_export()`, `#| eval: false` and flagged ones."
    if cell.cell_type != 'code' or 'nbdev_export' + '(' in cell.source: return True
    direc = getattr(cell, 'directives_', {}) or {}
    return direc.get('eval:', [''])[0].lower() == 'false' or bool(flags & direc.keys())


def check_saved_outputs(nb_path: Path, flags: set) -> list[str]:
    "Run the notebook (raising on the first error) and list each cell whose saved outputs lack what it displays."
    saved = {i: output_kinds(c.get('outputs', [])) for i, c in enumerate(json.loads(nb_path.read_text())['cells'])}
    nb = NBProcessor(nb_path, procs=FrontmatterProc, process=True).nb
    problems = [f"cell {i} has an error saved as its output" for i, k in saved.items() if 'an error' in k]
    ran = []
    shell = CaptureShell(nb_path)
    with working_directory(nb_path.parent):
        for i, cell in enumerate(nb.cells):
            if skipped(cell, flags): continue
            shell.cell(cell)
            if shell.exc: raise RuntimeError(f"{nb_path.name}, cell {i}, raised:\n{shell.prettytb(fname=nb_path)}")
            ran.append((i, cell))
    for i, cell in ran:
        missing = output_kinds(cell.outputs) - saved.get(i, set())
        if missing:
            first = cell.source.strip().splitlines()[0][:70] if cell.source.strip() else ''
            problems.append(f"cell {i} ({first!r}) shows {' and '.join(sorted(missing))} when run, but none is saved")
    return problems


@pytest.mark.parametrize('nb', NBS, ids=[str(p.relative_to(ROOT/'nbs').with_suffix('')) for p in NBS])
def test_notebook(nb, monkeypatch):
    monkeypatch.setenv('IN_TEST', '1')
    cfg = get_config(path=ROOT)
    monkeypatch.syspath_prepend(str(cfg.config_path))
    problems = check_saved_outputs(nb, set(cfg.tst_flags.split()))
    assert not problems, (f"{nb.name} is saved without the outputs a reader should see; run "
                          f"`python .ci/execute_nbs.py {nb.stem}` and commit it:\n  " + '\n  '.join(problems))


def test_the_check_catches_a_notebook_saved_without_outputs(tmp_path):
    "The check above fails on a notebook whose printing and drawing cells were saved blank, or with an error."
    def cell(src, outputs=()): return dict(cell_type='code', id=os.urandom(4).hex(), metadata={}, execution_count=None,
                                          source=src, outputs=list(outputs))
    printed = dict(output_type='stream', name='stdout', text='3\n')
    cells = [cell('x = 1 + 2'), cell('print(x)', [printed]), cell('x'),
             cell('import matplotlib.pyplot as plt\nplt.plot([1, 2]);'), cell('y = 0', [dict(output_type='error', ename='E', evalue='', traceback=[])])]
    nb = tmp_path/'t.ipynb'
    nb.write_text(json.dumps(dict(cells=cells, metadata={}, nbformat=4, nbformat_minor=5)))
    problems = check_saved_outputs(nb, set())
    assert len(problems) == 3, problems
    assert 'cell 4 has an error' in problems[0]
    assert "cell 2 ('x') shows a value" in problems[1] and "cell 3 (" in problems[2] and 'a picture' in problems[2]
