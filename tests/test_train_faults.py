"Faults around `attngan train` on tiny(): a SIGKILLed run resumes exactly, damaged files, other settings on resume, --overwrite."
import json, os, shlex, shutil, signal, subprocess, sys, time
from pathlib import Path
import pytest, torch
from attngan.cli import main
from attngan.config import tiny
from attngan.runs import train
from _cli import ATTNGAN, ENV             # tests/_cli.py: the console script, one thread

quiet = dict(progress=False, log=lambda *a, **k: None)


def load(p): return torch.load(p, map_location='cpu', weights_only=True)


def same_tensors(a, b): return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def losses(h): return [{k: v for k, v in r.items() if k != 'sec'} for r in h]


def attngan(capsys, *args):
    "Run `attngan ARGS` in this process: (exit status, stdout, stderr)."
    rc = main([str(a) for a in args]); c = capsys.readouterr()
    return rc, c.out, c.err


def one_line_error(rc, err, *words):
    assert rc == 2 and 'Traceback' not in err and err.strip().count('\n') == 0, err
    for w in words: assert w in err, err


pytestmark = pytest.mark.usefixtures('one_thread')   # conftest.py


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
    "A 2-step tiny() run (checkpoint at step 2); tests copy it before damaging it."
    run = tmp_path_factory.mktemp('faults')/'run'
    train(tiny(), run, steps=2, **quiet)
    return run


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    shutil.copytree(tiny_run, tmp_path/'run')
    return tmp_path/'run'


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    run, straight = tmp_path/'run', tmp_path/'straight'
    p = subprocess.Popen([*ATTNGAN, 'train', '--preset', 'tiny', '--out', str(run), '--steps', '1000', '--quiet'],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        t0 = time.time()
        while not (run/'train_state.pt').exists() or load(run/'train_state.pt')['step'] < 2:   # a checkpoint past step 0
            assert p.poll() is None, p.stderr.read()
            assert time.time() - t0 < 120, 'no checkpoint past step 0 within 2 minutes'
            time.sleep(0.05)
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.kill(); p.wait()
    assert p.returncode == -signal.SIGKILL
    killed = load(run/'train_state.pt')                                       # whole: written atomically
    k = killed['step']; assert 2 <= k < 1000 and k % 2 == 0
    half = (run/'train_state.pt').read_bytes()
    (run/'.train_state.pt.k1ll3d.tmp').write_bytes(half[:len(half) // 2])     # as if killed mid-write
    (run/'.notes.tmp').write_text('not ours')
    target = k + 3                                                            # odd: the last checkpoint is the closing one
    r = subprocess.run([*ATTNGAN, 'train', '--out', str(run), '--resume', '--steps', str(target), '--quiet'],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f'Trained steps {k + 1}-{target}' in r.stdout, r.stdout
    final = {p.name: load(p) for p in run.glob('*.pt')}                       # every file loads with weights_only=True
    assert sorted(final) == ['damsm.pt', 'generator.pt', 'train_state.pt']
    st = final['train_state.pt']
    assert st['step'] == target and [h['step'] for h in st['history']] == list(range(1, target + 1))
    assert st['history'][:k] == killed['history']                             # the history continues from the checkpoint
    assert json.loads((run/'losses.json').read_text())[-1]['step'] == target
    legs = json.loads((run/'legs.json').read_text())                          # one leg per command, named as it was typed
    assert [l['command'] for l in legs] == [shlex.join(['attngan', 'train', '--preset', 'tiny', '--out', str(run), '--steps', '1000', '--quiet']),
                                            shlex.join(['attngan', 'train', '--out', str(run), '--resume', '--steps', str(target), '--quiet'])]
    assert legs[0]['steps'][0] == 0 and legs[0]['steps'][1] in (k - 2, k)      # the kill may fall between train_state.pt and legs.json
    assert legs[1]['steps'] == [k, target]
    assert same_tensors(final['generator.pt'], st['G_ema'])
    steps = sorted(int(f.stem[5:]) for f in (run/'samples').glob('step_*.png'))
    assert set(range(0, target, 2)) | {target} <= set(steps)
    assert not list(run.rglob('.*.pt.*.tmp')) and not list(run.rglob('.*.png.*.tmp')) and (run/'.notes.tmp').exists()
    train(tiny(), straight, steps=target, **quiet)                            # never interrupted
    ref = load(straight/'train_state.pt')
    assert same_tensors(load(straight/'generator.pt'), final['generator.pt']) and same_tensors(ref['G'], st['G'])
    assert all(same_tensors(a, b) for a, b in zip(ref['Ds'], st['Ds']))
    assert losses(ref['history']) == losses(st['history'])


def test_truncated_checkpoint_is_named(run_copy, capsys):
    run = run_copy
    good = (run/'train_state.pt').read_bytes()
    (run/'train_state.pt').write_bytes(good[:len(good) // 2])
    rc, out, err = attngan(capsys, 'train', '--out', run, '--resume', '--steps', 4, '--quiet')
    one_line_error(rc, err, f"{run/'train_state.pt'} is damaged", 'put back a copy', '--overwrite')
    (run/'train_state.pt').write_bytes(good)
    dm = (run/'damsm.pt').read_bytes()
    (run/'damsm.pt').write_bytes(dm[:len(dm) // 2])
    rc, out, err = attngan(capsys, 'train', '--out', run, '--resume', '--steps', 4, '--quiet')
    one_line_error(rc, err, f"{run/'damsm.pt'}, the run's copy of its DAMSM, is damaged", '--overwrite')
    (run/'damsm.pt').unlink()
    rc, out, err = attngan(capsys, 'train', '--out', run, '--resume', '--steps', 4, '--quiet')
    one_line_error(rc, err, f"{run/'damsm.pt'} is missing, so the run cannot be resumed")
    (run/'damsm.pt').write_bytes(dm)
    g = (run/'generator.pt').read_bytes()                                     # not read on resume: rewritten
    (run/'generator.pt').write_bytes(g[:len(g) // 2]); (run/'losses.json').write_text('[{"st')
    rc, out, err = attngan(capsys, 'train', '--out', run, '--resume', '--steps', 3, '--quiet')
    assert rc == 0, err
    assert load(run/'train_state.pt')['step'] == 3 and same_tensors(load(run/'generator.pt'), load(run/'train_state.pt')['G_ema'])
    assert json.loads((run/'losses.json').read_text())[-1]['step'] == 3


def test_resume_with_other_settings_lists_them(run_copy, tmp_path, capsys):
    run = run_copy
    before = (run/'train_state.pt').read_bytes()
    rc, out, err = attngan(capsys, 'train', '--out', run, '--resume', '--preset', 'demo', '--quiet')
    one_line_error(rc, err, 'was started with other settings', 'gan.ngf: 4 -> 16', 'train.batch_size: 4 -> 32', 'more)')
    rc, out, err = attngan(capsys, 'train', '--out', run, '--resume', '--seed', 7, '--quiet')
    one_line_error(rc, err, '(train.seed: 0 -> 7)')
    rc, out, err = attngan(capsys, 'train', '--out', run, '--resume', '--preset', 'tiny', '--seed', 5, '--quiet')
    one_line_error(rc, err, '(train.seed: 0 -> 5)')
    from attngan.pretrain import save_damsm, load_damsm
    te, ie, cfg, vocab = load_damsm(run)
    other = tiny(); other.text.hidden_dim = 6
    from attngan.damsm import TextEncoder, image_encoder
    save_damsm(tmp_path/'other', TextEncoder(len(vocab), other.text), image_encoder(other), other, vocab)
    rc, out, err = attngan(capsys, 'train', '--out', run, '--resume', '--damsm', tmp_path/'other', '--quiet')
    one_line_error(rc, err, '(text.hidden_dim: 8 -> 6)')
    torch.manual_seed(1)
    save_damsm(tmp_path/'reinit', TextEncoder(len(vocab), cfg.text), ie, cfg, vocab)    # same sizes, other weights
    rc, out, err = attngan(capsys, 'train', '--out', run, '--resume', '--damsm', tmp_path/'reinit', '--quiet')
    one_line_error(rc, err, 'DAMSM: ', 'other weights or vocabulary')
    assert (run/'train_state.pt').read_bytes() == before                      # refusals change nothing
    save_damsm(tmp_path/'same', te, ie, cfg, vocab)                           # the run's own DAMSM and settings: fine
    rc, out, err = attngan(capsys, 'train', '--out', run, '--resume', '--preset', 'tiny', '--seed', 0,
                           '--damsm', tmp_path/'same', '--steps', 3, '--quiet')
    assert rc == 0, err
    assert load(run/'train_state.pt')['step'] == 3


def test_existing_folder_needs_resume_or_overwrite(tmp_path, capsys):
    run = tmp_path/'run'
    train(tiny(), run, steps=4, **quiet)
    (run/'notes.txt').write_text('mine'); (run/'mine').mkdir(); (run/'mine'/'a.txt').write_text('mine')
    (run/'eval').mkdir(); (run/'eval'/'metrics.json').write_text('{}')       # `attngan evaluate` of the old run
    rc, out, err = attngan(capsys, 'train', '--preset', 'tiny', '--out', run, '--steps', 2, '--quiet')
    one_line_error(rc, err, 'already holds a training run', '--resume', '--overwrite')
    rc, out, err = attngan(capsys, 'train', '--out', run, '--resume', '--overwrite', '--quiet')
    one_line_error(rc, err, '--resume continues the run', 'pass one of them, not both')
    rc, out, err = attngan(capsys, 'train', '--preset', 'tiny', '--out', run, '--damsm', tmp_path/'nowhere', '--overwrite', '--quiet')
    one_line_error(rc, err, 'No DAMSM run folder')
    assert load(run/'train_state.pt')['step'] == 4                            # a failed start deletes nothing
    rc, out, err = attngan(capsys, 'train', '--preset', 'tiny', '--out', run, '--steps', 2, '--overwrite', '--quiet')
    assert rc == 0, err
    assert '--overwrite: deleted the' in out
    st = load(run/'train_state.pt')
    assert st['step'] == 2 and len(st['history']) == 2
    assert sorted(f.name for f in (run/'samples').glob('step_*')) == ['step_000000.png', 'step_000002.png']
    assert not (run/'eval').exists()
    assert (run/'notes.txt').read_text() == 'mine' and (run/'mine'/'a.txt').read_text() == 'mine'


def test_overwrite_never_replaces_a_damsm_pretraining_run(tmp_path, capsys):
    d = tmp_path/'damsm'; d.mkdir()
    for f in ('config.json', 'vocab.json', 'damsm.pt', 'damsm_state.pt'): (d/f).write_text('x')
    rc, out, err = attngan(capsys, 'train', '--preset', 'tiny', '--out', d, '--overwrite', '--quiet')
    one_line_error(rc, err, 'holds a DAMSM pre-training run', 'choose another --out')
    assert sorted(f.name for f in d.iterdir()) == ['config.json', 'damsm.pt', 'damsm_state.pt', 'vocab.json']


def test_run_killed_before_its_first_checkpoint(tiny_run, tmp_path, capsys):
    "config.json, vocab.json and damsm.pt written, no train_state.pt yet: the messages point to --overwrite, which works."
    run = tmp_path/'run'; run.mkdir()
    for f in ('config.json', 'vocab.json', 'damsm.pt'): shutil.copy(tiny_run/f, run/f)
    rc, out, err = attngan(capsys, 'train', '--out', run, '--resume', '--quiet')
    one_line_error(rc, err, 'stopped before its first checkpoint', '--overwrite')
    rc, out, err = attngan(capsys, 'train', '--preset', 'tiny', '--out', run, '--steps', 1, '--quiet')
    one_line_error(rc, err, 'holds files of another run (config.json, vocab.json, damsm.pt)', '--overwrite')
    rc, out, err = attngan(capsys, 'train', '--preset', 'tiny', '--out', run, '--steps', 1, '--overwrite', '--quiet')
    assert rc == 0, err
    assert load(run/'train_state.pt')['step'] == 1


def test_sigkill_at_random_points_then_resume(tmp_path):
    "Killed three times at random moments (between steps, mid-checkpoint, mid-sample), resumed each time: same run as never stopped."
    import random
    seed = int(os.environ.get('ATTNGAN_FAULT_SEED', random.randrange(10**6))); rng = random.Random(seed)
    print(f'kill points drawn with ATTNGAN_FAULT_SEED={seed}')                  # rerun a failure with the same points
    run, straight, target = tmp_path/'run', tmp_path/'straight', 80
    cmd = [*ATTNGAN, 'train', '--preset', 'tiny', '--out', str(run), '--steps', str(target), '--quiet']
    kills = []
    for leg in range(3):
        p = subprocess.Popen(cmd + (['--resume'] if leg else []), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
        try:
            before = load(run/'train_state.pt')['step'] if leg else -1
            t0 = time.time()
            while not (run/'train_state.pt').exists() or load(run/'train_state.pt')['step'] <= before:   # this leg has saved once
                assert p.poll() is None, p.stderr.read()
                assert time.time() - t0 < 120, 'no new checkpoint within 2 minutes'
                time.sleep(0.02)
            time.sleep(rng.uniform(0, 1.0))
            os.kill(p.pid, signal.SIGKILL)
        finally:
            p.kill(); p.wait()
        for f in run.glob('*.pt'): load(f)                                       # every checkpoint stays readable
        kills.append(load(run/'train_state.pt')['step'])
    assert kills == sorted(kills) and kills[-1] < target, (seed, kills)
    r = subprocess.run(cmd + ['--resume'], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    st = load(run/'train_state.pt')
    assert st['step'] == target and [h['step'] for h in st['history']] == list(range(1, target + 1))
    assert not list(run.rglob('.*.pt.*.tmp'))
    train(tiny(), straight, steps=target, **quiet)
    ref = load(straight/'train_state.pt')
    assert same_tensors(ref['G'], st['G']) and same_tensors(ref['G_ema'], st['G_ema']), (seed, kills)
    assert all(same_tensors(a, b) for a, b in zip(ref['Ds'], st['Ds']))
    assert losses(ref['history']) == losses(st['history'])
