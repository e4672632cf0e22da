"The `attngan` command end to end on the tiny() preset: pretrain-damsm -> train -> sample, and its one-line errors."
import subprocess, sys
from pathlib import Path
import pytest

ATTNGAN = [sys.executable, '-c', 'import sys; from attngan.cli import main; sys.exit(main(sys.argv[1:]))']


def run(*args, timeout=600):
    return subprocess.run([*ATTNGAN, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def one_line_error(r, *words):
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert 'Traceback' not in r.stderr and r.stderr.strip().count('\n') == 0, r.stderr
    for w in words: assert w in r.stderr, r.stderr


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
    d = tmp_path_factory.mktemp('cli')
    r = run('pretrain-damsm', '--preset', 'tiny', '--out', d/'damsm', '--epochs', 1, '--quiet')
    assert r.returncode == 0, r.stderr
    r = run('train', '--preset', 'tiny', '--damsm', d/'damsm', '--out', d/'gan', '--steps', 2, '--quiet')
    assert r.returncode == 0, r.stderr
    return d


def test_sample_writes_every_stage_and_attention(tiny_run):
    out = tiny_run/'samples'
    r = run('sample', 'this bird has a red crown and a white belly', 'a small bird with zzyzx wings',
            '--run', tiny_run/'gan', '--out', out, '--n', 2, '--seed', 5)
    assert r.returncode == 0, r.stderr
    assert "'zzyzx'" in r.stdout and 'not in the vocabulary' in r.stdout
    names = sorted(p.name for p in out.glob('*.png'))
    assert 'caption1_sample1_16px.png' in names and 'caption1_sample1_32px.png' in names
    assert 'caption0_sample0_attention.png' in names and len(names) == 2 * 2 * 3


def test_sample_errors(tiny_run):
    one_line_error(run('sample', '   ', '--run', tiny_run/'gan', '--out', tiny_run/'x'), 'has no words')
    one_line_error(run('sample', 'qqq zzz', '--run', tiny_run/'gan', '--out', tiny_run/'x'), 'None of the words')
    one_line_error(run('sample', 'a red bird', '--run', tiny_run/'nope'), 'No run folder')
    one_line_error(run('sample', 'a red bird', '--run', tiny_run/'damsm'), 'DAMSM pre-training run')


def test_sample_without_run_uses_the_shipped_model(tmp_path):
    r = run('sample', 'this bird has a red crown and a blue wing', '--out', tmp_path/'s', '--n', '2')
    assert r.returncode == 0 and 'shipped with attngan' in r.stdout, (r.stdout, r.stderr)
    assert sorted(p.name for p in (tmp_path/'s').glob('*_64px.png')) == ['caption0_sample0_64px.png', 'caption0_sample1_64px.png']


def test_train_errors(tiny_run):
    one_line_error(run('train', '--preset', 'tiny', '--damsm', tiny_run/'nope', '--out', tiny_run/'g2'), 'No DAMSM run folder')
    one_line_error(run('train', '--resume', '--out', tiny_run/'damsm'), 'DAMSM pre-training run')
    one_line_error(run('pretrain-damsm', '--out', tiny_run/'d2', '--minutes', '-1'), '--minutes must be positive')
