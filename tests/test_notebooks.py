"One pytest test per notebook: each runs top to bottom as `nbdev_test` runs it (cells flagged `slow`/`notest` skipped)."
import os
from pathlib import Path
import pytest
import nbdev.test as nbtest
from nbdev.config import get_config

ROOT = Path(__file__).resolve().parents[1]
NBS = sorted(p for p in (ROOT/'nbs').glob('*.ipynb'))


@pytest.mark.parametrize('nb', NBS, ids=[p.stem for p in NBS])
def test_notebook(nb, monkeypatch):
    monkeypatch.setenv('IN_TEST', '1')
    monkeypatch.chdir(ROOT/'nbs')
    cfg = get_config(path=ROOT)
    ok, secs = nbtest.test_nb(nb, skip_flags=cfg.tst_flags.split(), basepath=cfg.config_path)
    assert ok, f"{nb.name} failed (its error is printed above)"
