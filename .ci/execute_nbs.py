#!/usr/bin/env python3
"""Execute notebooks and save their outputs, so a reader sees shapes and pictures without running anything.

    python .ci/execute_nbs.py                          # every notebook of nbs/course and nbs/library (slow cells skipped, as nbdev_test does)
    python .ci/execute_nbs.py 03_attention cli         # some of them, by name (or course/03_attention, nbs/library/cli.ipynb)

Run it from the repository root with the project's venv; each executed notebook is then `nbdev_clean`ed (outputs
kept, metadata stripped). The notebooks run in their own folder with IN_TEST unset, so they show the full (not the test-sized) results.
"""
import os, sys, subprocess, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def execute(nb_path: Path):
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    from nbdev.config import get_config
    skip = get_config(path=ROOT).tst_flags.split()
    nb = read_nb(nb_path)
    def flagged(cell):  # cells marked with a skipped test flag are left unrun
        first = cell.source.splitlines()[:3]
        return any(l.strip().startswith('#|') and any(f in l.split() for f in skip) for l in first)
    for cell in nb.cells:                  # a cell that no longer prints must not keep its old output (slow cells keep theirs)
        if cell.cell_type == 'code' and not flagged(cell): cell.outputs = []
    cwd = os.getcwd(); os.chdir(nb_path.parent)
    try:
        os.environ.pop('IN_TEST', None)
        sh = CaptureShell(mpl_format='png')
        sh.run_all(nb, exc_stop=True, preproc=flagged)
    finally: os.chdir(cwd)
    write_nb(nb, nb_path)

def find(name: str) -> Path:
    "The notebook a name means: a path, or a notebook's name (with or without its folder) under nbs/."
    p = Path(name)
    if p.suffix == '.ipynb' and p.exists(): return p.resolve()
    stem = p.with_suffix('').as_posix().removeprefix('nbs/')
    hits = [q for q in (ROOT/'nbs').rglob('*.ipynb') if q.relative_to(ROOT/'nbs').with_suffix('').as_posix() in (stem, ) or q.stem == stem]
    if len(hits) != 1: sys.exit(f"{name}: {'no notebook' if not hits else 'several notebooks'} of that name under nbs/")
    return hits[0]

def main(argv):
    paths = [find(n) for n in argv] if argv else sorted((ROOT/'nbs').glob('*/*.ipynb'))
    for p in paths:
        t0 = time.time(); execute(p)
        # clean only the notebook just run: another notebook may be open in an editor
        subprocess.run([str(Path(sys.executable).parent/'nbdev_clean'), '--fname', str(p)], cwd=ROOT, check=True)
        print(f'{p.name}: {time.time() - t0:.1f} s, {p.stat().st_size / 1024:.0f} KiB')

if __name__ == '__main__': main(sys.argv[1:])
