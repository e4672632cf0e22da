"""Two attngan processes on one run folder: while `attngan train` runs, a second train (--resume, or fresh with
--overwrite) or a pretrain-damsm into the same folder exits 2 with one sentence and changes no file of the run; the
first run finishes normally; the lock dies with its process, so a SIGKILLed run resumes at once."""
import hashlib, os, signal, subprocess, sys, time
from pathlib import Path
import pytest, torch
from attngan.files import LOCK_NAME, lock_holder
from _cli import ATTNGAN, ENV             # tests/_cli.py: the console script, one thread

# tiny() checkpoints and draws samples every 2 steps, which makes 400 steps take minutes; these two --set keep the
# run long enough to be caught in the middle while the test stays short
FAST = ['--set', 'train.ckpt_every=20', '--set', 'train.sample_every=400']

pytestmark = pytest.mark.skipif(sys.platform == 'win32', reason='POSIX signals and file locks')


def load(p): return torch.load(p, map_location='cpu', weights_only=True)


def snapshot(run: Path) -> dict:
    "Every file under `run` (hidden ones too) with the SHA-256 of its bytes."
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.rglob('*')) if p.is_file()}


def start_training(run: Path, steps: int = 400) -> subprocess.Popen:
    return subprocess.Popen([*ATTNGAN, 'train', '--preset', 'tiny', '--out', str(run), '--steps', str(steps), '--quiet', *FAST],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def wait_for_checkpoint(p: subprocess.Popen, run: Path, past: int = 0, timeout: float = 180) -> int:
    "Wait until the run has checkpointed a step after `past`; returns that step."
    t0 = time.time()
    while True:
        assert p.poll() is None, p.stderr.read()
        if (run/'train_state.pt').exists():
            step = load(run/'train_state.pt')['step']
            if step > past: return step
        assert time.time() - t0 < timeout, f'no checkpoint past step {past} within {timeout} s'
        time.sleep(0.05)


def attngan(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([*ATTNGAN, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=timeout)


def in_use(run: Path, pid: int, command: str) -> str:
    return (f"attngan {command}: error: {run} is in use by another attngan process (pid {pid}); "
            f"wait for it to finish, or pass another --out.\n")


def test_a_second_process_is_refused_and_changes_nothing(tmp_path):
    run = tmp_path/'run'
    p = start_training(run)
    try:
        k = wait_for_checkpoint(p, run)
        os.kill(p.pid, signal.SIGSTOP)                     # holds still (and keeps its lock) while the others try
        try:
            before = snapshot(run)
            assert lock_holder(run) == p.pid and LOCK_NAME in before
            for args, command in [(['train', '--out', run, '--resume', '--quiet'], 'train'),
                                  (['train', '--preset', 'tiny', '--out', run, '--steps', 2, '--overwrite', '--quiet'], 'train'),
                                  (['pretrain-damsm', '--preset', 'tiny', '--out', run, '--epochs', 1, '--quiet'], 'pretrain-damsm')]:
                r = attngan(*args)
                assert (r.returncode, r.stderr) == (2, in_use(run, p.pid, command)), (args, r.returncode, r.stderr)
                assert r.stdout == ''
                assert snapshot(run) == before, args           # no file of the run changed, none appeared or went
        finally:
            os.kill(p.pid, signal.SIGCONT)
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    finally:
        if p.poll() is None: p.kill(); p.wait()
    assert 'Trained steps 1-400' in out, out
    st = load(run/'train_state.pt')
    assert k < 400 and st['step'] == 400 and [h['step'] for h in st['history']] == list(range(1, 401))
    assert not (run/LOCK_NAME).exists()                    # released at the end: the folder holds only the run's files


def test_after_a_sigkill_resume_works_at_once(tmp_path):
    run = tmp_path/'run'
    p = start_training(run)
    try:
        wait_for_checkpoint(p, run)
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.kill(); p.wait()
    assert p.returncode == -signal.SIGKILL
    assert lock_holder(run) == p.pid                        # the dead process's lock file is still there ...
    k = load(run/'train_state.pt')['step']
    r = attngan('train', '--out', run, '--resume', '--steps', k + 3, '--quiet')   # ... and stops nobody
    assert r.returncode == 0, r.stderr
    assert f'Trained steps {k + 1}-{k + 3}' in r.stdout, r.stdout
    assert load(run/'train_state.pt')['step'] == k + 3 and not (run/LOCK_NAME).exists()


def test_without_fcntl_runs_unlocked(tmp_path, monkeypatch, one_thread):
    "Windows has no fcntl: training runs, nothing is locked, no lock file is written."
    import attngan.files as files
    from attngan.config import tiny
    from attngan.runs import train
    monkeypatch.setattr(files, 'fcntl', None)
    st = train(tiny(), tmp_path/'run', steps=1, progress=False, log=lambda *a, **k: None)
    assert st.step == 1 and not (tmp_path/'run'/LOCK_NAME).exists()
    with files.RunLock(tmp_path/'run') as lock: assert not lock.held


def test_the_lock_is_held_by_train_and_pretrain_damsm_in_process(tmp_path, monkeypatch, one_thread):
    "Seen from inside: the run folder's lock is held while train() and pretrain_damsm() run, with this process's pid."
    import attngan.runs as R, attngan.pretrain_runs as P
    from attngan.config import tiny
    seen = []
    real_prepare, real_start = R.prepare_run, P._start
    def prepare(cfg, out, *a, **k): seen.append(('train', lock_holder(out))); return real_prepare(cfg, out, *a, **k)
    def start(cfg, out, *a, **k): seen.append(('pretrain', lock_holder(out))); return real_start(cfg, out, *a, **k)
    monkeypatch.setattr(R, 'prepare_run', prepare); monkeypatch.setattr(P, '_start', start)
    R.train(tiny(), tmp_path/'gan', steps=1, progress=False, log=lambda *a, **k: None)
    P.pretrain_damsm(tiny(), tmp_path/'damsm', max_steps=1, epochs=1, progress=False, log=lambda *a, **k: None)
    assert seen == [('train', os.getpid()), ('pretrain', os.getpid())]
    assert lock_holder(tmp_path/'gan') is None and lock_holder(tmp_path/'damsm') is None
