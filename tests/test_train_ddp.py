"Two CPU processes under torchrun (gloo) train tiny() for a few steps and rank 0 writes one checkpoint."
import os, socket, subprocess, sys
import torch

SCRIPT = "import sys\nfrom attngan.train import main_train\nsys.exit(main_train(sys.argv[1:]))\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def torchrun(tmp_path, *args, n=2):
    script = tmp_path/'train_entry.py'
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    cmd = [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={n}', '--nnodes=1',
           '--master_addr=127.0.0.1', f'--master_port={free_port()}', str(script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=150, env=env)


def test_two_processes_train_and_resume(tmp_path):
    run = tmp_path/'run'
    r = torchrun(tmp_path, '--data', 'synth', '--out', str(run), '--preset', 'tiny', '--steps', '3', '--quiet')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    st = torch.load(run/'train_state.pt', map_location='cpu', weights_only=True)
    assert st['step'] == 3 and len(st['history']) == 3
    assert r.stdout.count('Trained steps 1-3') == 1                        # only rank 0 talks
    assert sorted(p.name for p in (run/'samples').glob('step_*.png')) == ['step_000000.png', 'step_000002.png', 'step_000003.png']
    # 2 processes x batch 4 = 8 images per step: tiny()'s 48 training birds make 6 steps per epoch
    r = torchrun(tmp_path, '--out', str(run), '--steps', '7', '--resume', '--quiet')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    st = torch.load(run/'train_state.pt', map_location='cpu', weights_only=True)
    assert (st['step'], st['epoch'], st['batch']) == (7, 1, 1)
    # one process continues the two-process run from the same place in the epoch (batch 1 of 8 images = batch 2 of 4)
    from attngan.train import train
    lines = []
    st = train(None, run, steps=8, resume=True, progress=False, log=lines.append)
    assert (st.step, st.epoch, st.batch) == (8, 1, 3) and any('instead of 2' in l for l in lines)
