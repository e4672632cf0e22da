"Bad input to the data layer: each mistake a user can make ends in one clear sentence naming the fix."
import pickle, subprocess, sys
from pathlib import Path
import pytest
from attngan.config import UserError
from attngan.data import CUBDataset, Vocab, encode_caption, read_split, safe_load_pickle


def one_line(e): return str(e.value).count('\n') == 0


def test_reads_synthetic_birds(birds_root):
    ds = CUBDataset(birds_root, 'train', sizes=(16, 32))
    assert len(ds) > 0 and len(ds.vocab) > 20
    s = ds[0]
    assert [tuple(t.shape) for t in s['images']] == [(3, 16, 16), (3, 32, 32)]
    test = CUBDataset(birds_root, 'test', sizes=(32,), vocab=ds.vocab)
    assert set(ds.class_ids).isdisjoint(test.class_ids)   # unseen test species


def test_missing_root(tmp_path):
    with pytest.raises(UserError, match='does not exist') as e: CUBDataset(tmp_path/'nope')
    assert one_line(e) and 'CUB_200_2011' in str(e.value)


@pytest.mark.parametrize('part', ['CUB_200_2011/images.txt', 'CUB_200_2011/bounding_boxes.txt', 'text', 'train'])
def test_missing_part(birds_copy, part):
    p = birds_copy/part
    import shutil
    shutil.rmtree(p) if p.is_dir() else p.unlink()
    with pytest.raises(UserError, match='is missing') as e: CUBDataset(birds_copy)
    assert one_line(e) and part.split('/')[-1] in str(e.value)


def test_missing_file_list(birds_copy):
    (birds_copy/'train'/'filenames.pickle').unlink()
    with pytest.raises(UserError, match='filenames.pickle is missing'): CUBDataset(birds_copy)


def test_plain_text_file_list(birds_copy):
    keys = safe_load_pickle(birds_copy/'train'/'filenames.pickle')
    (birds_copy/'train'/'filenames.pickle').unlink()
    (birds_copy/'train'/'filenames.txt').write_text('\n'.join(keys) + '\n')
    assert CUBDataset(birds_copy).keys == keys


def test_too_few_captions(birds_copy):
    key = read_split(birds_copy, 'train')[0][0]
    f = birds_copy/'text'/f'{key}.txt'
    f.write_text('\n'.join(f.read_text().splitlines()[:4]) + '\n')
    with pytest.raises(UserError, match='has 4 captions but 10') as e: CUBDataset(birds_copy)
    assert one_line(e) and key in str(e.value)
    assert len(CUBDataset(birds_copy, captions_per_image=4)) > 0


def corrupt_first_image(root):
    ds = CUBDataset(root, sizes=(16,))
    path = ds.paths[0]
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 3])   # truncated
    return ds.keys[0], path


def test_corrupt_image_named(birds_copy):
    key, path = corrupt_first_image(birds_copy)
    ds = CUBDataset(birds_copy, sizes=(16,))
    with pytest.raises(UserError, match='corrupt or truncated') as e: ds[0]
    assert one_line(e) and str(path) in str(e.value)


def test_corrupt_image_skipped_and_counted(birds_copy):
    key, _ = corrupt_first_image(birds_copy)
    with pytest.warns(UserWarning, match='Skipped 1'):
        ds = CUBDataset(birds_copy, sizes=(16,), skip_corrupt=True)
    assert ds.n_skipped == 1 and key not in ds.keys
    ds[0]


class Evil:
    def __reduce__(self): return (Path('/tmp/attngan-pwned').touch, ())


def test_pickle_with_code_is_refused(birds_copy):
    Path('/tmp/attngan-pwned').unlink(missing_ok=True)
    pickle.dump([Evil()], open(birds_copy/'train'/'filenames.pickle', 'wb'))
    with pytest.raises(UserError, match='refused') as e: CUBDataset(birds_copy)
    assert one_line(e) and not Path('/tmp/attngan-pwned').exists()


def test_pickle_of_wrong_things_is_refused(birds_copy):
    pickle.dump({'a': [1, 2]}, open(birds_copy/'train'/'filenames.pickle', 'wb'))
    with pytest.raises(UserError, match='should hold a list'): CUBDataset(birds_copy)


def test_bad_class_info(birds_copy):
    pickle.dump([1, 2], open(birds_copy/'train'/'class_info.pickle', 'wb'))
    with pytest.raises(UserError, match='must match one to one'): CUBDataset(birds_copy)


def test_captions_unknown_and_empty(birds_root):
    v = CUBDataset(birds_root, sizes=(16,)).vocab
    assert Vocab.UNK in v.encode('this bird has a zzyzx crown')
    with pytest.raises(UserError, match='no words'): encode_caption(v, ' ... ')
    with pytest.raises(UserError, match='None of the words'): encode_caption(v, 'zzyzx qwfp')


def run_cli(*args):
    return subprocess.run([sys.executable, '-c', 'import sys; from attngan.cli import main; sys.exit(main(sys.argv[1:]))', *args],
                          capture_output=True, text=True, timeout=300)


def test_cli_make_birds_and_bad_input(tmp_path):
    r = run_cli('make-birds', str(tmp_path/'b'), '--n', '12', '--size', '32', '--quiet')
    assert r.returncode == 0, r.stderr
    assert 'Wrote 12 synthetic birds' in r.stdout
    r = run_cli('make-birds', str(tmp_path/'c'), '--n', '0')
    assert r.returncode == 2 and 'Traceback' not in r.stderr and r.stderr.count('\n') == 1
    r = run_cli('bench', '--preset', 'nope')
    assert r.returncode == 2 and 'invalid choice' in r.stderr
