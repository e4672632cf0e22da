import os, shutil
from pathlib import Path
import pytest

os.environ.setdefault('MPLBACKEND', 'Agg')


@pytest.fixture(scope='session')
def birds_root(tmp_path_factory) -> Path:
    "A small synthetic-birds set in the CUB layout, written once per test session (read-only: copy it to change it)."
    from attngan.birdset import make_birds
    return make_birds(tmp_path_factory.mktemp('synth')/'birds', n=60, size=48, seed=3, progress=False)


@pytest.fixture
def birds_copy(birds_root, tmp_path) -> Path:
    "A private copy of `birds_root` that a test may damage."
    dst = tmp_path/'birds'
    shutil.copytree(birds_root, dst)
    return dst


@pytest.fixture
def one_thread():
    "torch on one thread for the test (the suite shares 2 cores with the notebooks' own runs), restored after."
    import torch
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

