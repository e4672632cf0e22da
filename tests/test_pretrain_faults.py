"DAMSM pre-training killed (SIGKILL) at random moments and resumed each time: checkpoints stay readable and the run equals one never stopped."
import os, random, signal, subprocess, sys, time
from pathlib import Path
import pytest, torch
from attngan import pretrain_runs as P
from attngan.config import tiny
from _cli import ATTNGAN, ENV             # tests/_cli.py: the console script, one thread


def load(p): return torch.load(p, map_location='cpu', weights_only=True)
def same_tensors(a, b): return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
def flat(sd, pre=''):
    "Nested state dicts -> one flat dict of tensors."
    out = {}
    for k, v in sd.items():
        if isinstance(v, dict): out |= flat(v, f'{pre}{k}.')
        elif torch.is_tensor(v): out[pre + k] = v
    return out


def test_sigkill_at_random_points_of_pretraining_then_resume(birds_root, tmp_path):
    seed = int(os.environ.get('ATTNGAN_FAULT_SEED', random.randrange(10**6))); rng = random.Random(seed)
    print(f'kill points drawn with ATTNGAN_FAULT_SEED={seed}')
    run, straight, epochs = tmp_path/'run', tmp_path/'straight', 30     # 5 steps an epoch on birds_root
    cmd = [*ATTNGAN, 'pretrain-damsm', '--data', str(birds_root), '--out', str(run), '--preset', 'tiny', '--epochs', str(epochs), '--quiet']
    targets = sorted(rng.sample(range(1, epochs - 5), 3))                 # kill once the run has checkpointed these epochs ...
    kills = []
    for leg, target in enumerate(targets):
        p = subprocess.Popen(cmd + (['--resume'] if leg else []), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
        try:
            t0 = time.time()
            while not (run/'damsm_state.pt').exists() or load(run/'damsm_state.pt')['epoch'] < target:
                assert p.poll() is None, p.stderr.read()
                assert time.time() - t0 < 180, f'epoch {target} not reached within 3 minutes'
                time.sleep(0.01)
            time.sleep(rng.uniform(0, 0.2))                                   # ... plus a random part of the next epoch
            os.kill(p.pid, signal.SIGKILL)
        finally:
            p.kill(); p.wait()
        for f in run.glob('*.pt'): load(f)                                      # every checkpoint stays readable
        kills.append(load(run/'damsm_state.pt')['epoch'])
    print('epochs checkpointed when killed:', kills)
    assert kills == sorted(kills) and kills[0] < epochs, (seed, kills)   # killed inside the run, not after it
    r = subprocess.run(cmd + ['--resume'], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    assert not list(run.glob('.*.tmp'))
    with P.torch_threads(1):
        P.pretrain_damsm(tiny(), straight, data=birds_root, epochs=epochs, progress=False, log=lambda *a: None)
    a, b = load(straight/'damsm.pt'), load(run/'damsm.pt')
    assert same_tensors(flat(a), flat(b)), (seed, kills)
    sa, sb = load(straight/'damsm_state.pt'), load(run/'damsm_state.pt')
    assert sa['epoch'] == sb['epoch'] == epochs, (seed, kills)
