"Hostile and damaged files: every load is tensors-only, a checkpoint carrying pickled code is refused (and never run), altered shipped assets are named."
import ast, shutil
from pathlib import Path
import pytest, torch
from attngan.config import UserError, tiny

ROOT = Path(__file__).resolve().parents[1]
quiet = dict(progress=False, log=lambda *a, **k: None)


def one_sentence(e) -> bool: return '\n' not in str(e) and str(e).rstrip().endswith(('.', ')'))


def torch_loads(path: Path):
    "Every call torch.load(...) in a Python file, with whether it passes weights_only=True."
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == 'load' \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == 'torch':
            safe = any(k.arg == 'weights_only' and isinstance(k.value, ast.Constant) and k.value.value is True for k in node.keywords)
            yield node.lineno, safe


def test_every_torch_load_is_weights_only():
    files = sorted((ROOT/'attngan').glob('*.py')) + sorted((ROOT/'.ci').glob('*.py'))
    found = [(p.name, line, safe) for p in files for line, safe in torch_loads(p)]
    assert len(found) >= 3                                                     # the scan does see the package's loads
    assert [f"{n}:{line}" for n, line, safe in found if not safe] == []


class Payload:
    "Unpickling this would create a file: the proof that code ran."
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (Path.touch, (Path(self.marker),))


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
    from attngan.runs import train
    out = tmp_path_factory.mktemp('hostile')/'run'
    train(tiny(), out, steps=1, **quiet)
    return out


def poisoned(tiny_run, tmp_path, name):
    "A copy of the run whose `name` file carries pickled code; returns the copy and the marker the code would write."
    run = tmp_path/'run'; shutil.copytree(tiny_run, run)
    marker = tmp_path/'code_ran'
    torch.save({'state': Payload(marker)}, run/name)
    return run, marker


def test_pickled_code_in_a_generator_is_refused(tiny_run, tmp_path):
    from attngan.sample import Text2Image
    run, marker = poisoned(tiny_run, tmp_path, 'generator.pt')
    with pytest.raises(UserError) as e: Text2Image.from_checkpoint(run)
    assert 'generator.pt' in str(e.value) and one_sentence(e.value) and not marker.exists()


def test_pickled_code_in_a_damsm_is_refused(tiny_run, tmp_path):
    from attngan.pretrain import load_damsm
    run, marker = poisoned(tiny_run, tmp_path, 'damsm.pt')
    with pytest.raises(UserError) as e: load_damsm(run)
    assert 'damsm.pt' in str(e.value) and one_sentence(e.value) and not marker.exists()


def test_pickled_code_in_a_train_state_is_refused(tiny_run, tmp_path):
    from attngan.runs import train
    run, marker = poisoned(tiny_run, tmp_path, 'train_state.pt')
    with pytest.raises(UserError) as e: train(None, run, steps=2, resume=True, **quiet)
    assert 'train_state.pt' in str(e.value) and one_sentence(e.value) and not marker.exists()


@pytest.mark.parametrize('name', ['generator.pt', 'config.json', 'vocab.json'])
def test_an_altered_shipped_file_is_named(tmp_path, name):
    from attngan.sample import Text2Image, assets_dir, SHIPPED_MODEL
    folder = tmp_path/'model'; shutil.copytree(assets_dir()/SHIPPED_MODEL, folder)
    data = bytearray((folder/name).read_bytes()); data[len(data) // 2] ^= 1       # one bit flipped
    (folder/name).write_bytes(bytes(data))
    with pytest.raises(UserError) as e: Text2Image.pretrained(folder=folder)
    assert name in str(e.value) and 'checksum' in str(e.value) and one_sentence(e.value)


def test_a_missing_checksum_list_is_named(tmp_path):
    from attngan.sample import Text2Image, assets_dir, SHIPPED_MODEL
    folder = tmp_path/'model'; shutil.copytree(assets_dir()/SHIPPED_MODEL, folder)
    (folder/'SHA256SUMS').unlink()
    with pytest.raises(UserError) as e: Text2Image.pretrained(folder=folder)
    assert 'SHA256SUMS' in str(e.value) and one_sentence(e.value)
