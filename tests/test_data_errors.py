"Bad input to the data layer: each mistake a user can make ends in one clear sentence naming the fix."
import os, pickle, shutil, subprocess, sys, warnings
from pathlib import Path
import numpy as np, pytest
from PIL import Image
from attngan.config import Config, DataConfig, UserError
from attngan.data import Vocab, encode_caption, read_captions, read_split
from attngan.layouts import CUBDataset, data_report
from attngan.datachecks import DataReport, DataWarning, safe_load_pickle


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
    "Improved: one short caption file skips its image (reported) instead of stopping; over the threshold, one sentence."
    key = read_split(birds_copy, 'train')[0][0]
    f = birds_copy/'text'/f'{key}.txt'
    f.write_text('\n'.join(f.read_text().splitlines()[:4]) + '\n')
    with pytest.warns(DataWarning, match='fewer captions than captions_per_image'):
        ds = CUBDataset(birds_copy, sizes=(16,))
    assert key not in ds.keys and ds.report.skipped == {'captions_few': 1} and ds.report.examples['captions_few'] == [(key, '4 captions')]
    with pytest.raises(UserError, match='1 of 45 images') as e: CUBDataset(birds_copy, max_skipped=0)
    assert one_line(e) and key in str(e.value) and 'set captions_per_image=4' in str(e.value)
    with pytest.raises(UserError, match='has 4 captions but 10'): read_captions(birds_copy, key)   # the file alone: its own sentence
    assert len(CUBDataset(birds_copy, captions_per_image=4)) == 45


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


# --- damaged and unusual data sets (issue 13): each case ends in a correct result or one sentence

_WATCH, _OPENED = [], []

def _audit(event, args):
    "Record every file opened under a watched folder (an audit hook: it sees every open(), by any library)."
    if _WATCH and event == 'open' and isinstance(args[0], (str, bytes, os.PathLike)):
        p = os.path.abspath(os.path.normpath(os.fsdecode(args[0])))
        if any(p.startswith(w) for w in _WATCH): _OPENED.append(p)

sys.addaudithook(_audit)


@pytest.fixture
def outside(tmp_path):
    "A folder beside the data set holding a plausible image and captions, watched for any open() while a test runs."
    out = tmp_path/'outside'; out.mkdir()
    Image.new('RGB', (48, 48), 'red').save(out/'secret.png'); (out/'secret.txt').write_text('a red bird\n' * 10)
    _WATCH.append(str(out)); _OPENED.clear()
    yield out
    _WATCH.clear()


def keys_of(root): return read_split(root, 'train')[0]
def image_of(root, key): return root/'CUB_200_2011'/'images'/f'{key}.png'
def text_of(root, key): return root/'text'/f'{key}.txt'


@pytest.mark.parametrize('fmt', ['pickle', 'txt'])
@pytest.mark.parametrize('kind', ['relative', 'absolute'])
def test_file_list_pointing_outside_is_refused(birds_copy, outside, fmt, kind):
    keys = safe_load_pickle(birds_copy/'train'/'filenames.pickle')
    evil = '../../outside/secret' if kind == 'relative' else str(outside/'secret')   # text/<key>.txt would be outside/secret.txt
    keys[3] = evil
    with open(birds_copy/'CUB_200_2011'/'images.txt', 'a') as f: f.write(f"9999 {evil}.png\n")
    if fmt == 'txt': (birds_copy/'train'/'filenames.pickle').unlink(); (birds_copy/'train'/'filenames.txt').write_text('\n'.join(keys))
    else: pickle.dump(keys, open(birds_copy/'train'/'filenames.pickle', 'wb'))
    with pytest.raises(UserError, match='points outside the data folder') as e: CUBDataset(birds_copy)
    assert one_line(e) and repr(evil) in str(e.value) and f'filenames.{fmt}' in str(e.value)
    with pytest.raises(UserError, match='points outside'): data_report(birds_copy)
    assert _OPENED == []                                                   # nothing outside was opened


@pytest.mark.parametrize('entry', ['../../../outside/secret.png', '/etc/passwd', '001.A/../../../outside/secret.png'])
def test_images_txt_pointing_outside_is_refused(birds_copy, outside, entry):
    with open(birds_copy/'CUB_200_2011'/'images.txt', 'a') as f: f.write(f"9999 {entry}\n")
    with pytest.raises(UserError, match='points outside the data folder') as e: CUBDataset(birds_copy)
    assert one_line(e) and 'images.txt' in str(e.value) and _OPENED == []


@pytest.mark.parametrize('name', ['train/filenames.txt', 'CUB_200_2011/images.txt', 'CUB_200_2011/bounding_boxes.txt'])
def test_binary_index_file_is_named(birds_copy, name):
    if name.startswith('train'): (birds_copy/'train'/'filenames.pickle').unlink()
    (birds_copy/name).write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(UserError, match='is not text') as e: CUBDataset(birds_copy)
    assert one_line(e) and name.split('/')[-1] in str(e.value)


def test_unreadable_file_list_is_named(birds_copy):
    p = birds_copy/'train'/'filenames.pickle'; p.unlink(); p.mkdir()      # a folder where the file should be
    with pytest.raises(UserError, match='cannot be read') as e: CUBDataset(birds_copy)
    assert one_line(e)


def deep(mode, value, size=(48, 48)):
    "A uniform image of `mode`."
    return Image.new(mode, size, value)


def pal(transparent=False):
    im = Image.new('P', (48, 48), 1); im.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    if transparent: im.info['transparency'] = 1
    return im


# mode, image, file format, the RGB every pixel must have (none: lossy, checked within 4 levels)
MODES = [('L', lambda: deep('L', 77), 'PNG', (77, 77, 77)),
         ('LA', lambda: deep('LA', (77, 255)), 'PNG', (77, 77, 77)),
         ('LA', lambda: deep('LA', (77, 0)), 'PNG', (255, 255, 255)),              # fully transparent: white
         ('P', pal, 'PNG', (10, 20, 30)),
         ('P', lambda: pal(True), 'PNG', (255, 255, 255)),                         # transparent palette entry
         ('RGBA', lambda: deep('RGBA', (200, 100, 0, 255)), 'PNG', (200, 100, 0)),
         ('RGBA', lambda: deep('RGBA', (255, 0, 0, 128)), 'PNG', (255, 127, 127)),  # half transparent over white
         ('I;16', lambda: deep('I;16', 32896), 'PNG', (128, 128, 128)),            # 16-bit mid-grey, not clipped to white
         ('I', lambda: deep('I', 100), 'TIFF', (100, 100, 100)),                   # 8-bit values in 32 bits
         ('I', lambda: deep('I', 65535), 'TIFF', (255, 255, 255)),                 # 16-bit values in 32 bits
         ('F', lambda: deep('F', 0.5), 'TIFF', (128, 128, 128)),                   # floats in [0, 1]
         ('CMYK', lambda: deep('CMYK', (255, 0, 0, 0)), 'TIFF', (0, 255, 255)),    # cyan
         ('CMYK', lambda: deep('CMYK', (0, 255, 0, 0)), 'JPEG', None),             # magenta, lossy
         ('1', lambda: deep('1', 1), 'PNG', (255, 255, 255)),
         ('1', lambda: deep('1', 0), 'PNG', (0, 0, 0))]


@pytest.mark.parametrize('mode,make,fmt,want', MODES, ids=[f"{m}-{f}-{w}" for m, _, f, w in MODES])
def test_image_modes_become_rgb(birds_copy, mode, make, fmt, want):
    key = keys_of(birds_copy)[5]
    make().save(image_of(birds_copy, key), format=fmt)                    # PIL reads the content, not the file name
    assert Image.open(image_of(birds_copy, key)).mode == mode
    ds = CUBDataset(birds_copy, sizes=(16,), train=False, preload=True)
    t = ds[(ds.keys.index(key), 0)]['images'][0]
    px = ((t + 1) * 127.5).round().reshape(3, -1)
    assert (px == px[:, :1]).all()                                         # uniform, as the file
    got = tuple(int(v) for v in px[:, 0])
    if want is None: assert np.allclose(got, (255, 0, 255), atol=4), got
    else: assert got == want, got
    assert ds.report.modes == {mode: 1} and ds.report.n_skipped == 0


def test_large_image_is_read(birds_copy):
    key = keys_of(birds_copy)[7]
    Image.new('RGB', (6000, 6000), (10, 200, 30)).save(image_of(birds_copy, key), format='JPEG', quality=95)
    ds = CUBDataset(birds_copy, sizes=(16,), train=False, preload=True)
    t = ds[(ds.keys.index(key), 0)]['images'][0]
    assert ds.report.n_skipped == 0 and np.allclose(((t + 1) * 127.5).mean((1, 2)), (10, 200, 30), atol=4)


def test_decompression_bomb_is_skipped(birds_copy, monkeypatch):
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 5000)                  # the 48 x 48 birds (2,304 px) stay under it
    keys = keys_of(birds_copy)
    Image.new('RGB', (80, 80)).save(image_of(birds_copy, keys[1]))          # 6,400 px: PIL's warning zone
    Image.new('RGB', (110, 110)).save(image_of(birds_copy, keys[2]))        # 12,100 px: over twice the limit, PIL's error
    with pytest.warns(DataWarning, match='image too large'): ds = CUBDataset(birds_copy, sizes=(16,), preload=True)
    assert ds.report.skipped == {'image_too_large': 2} and len(ds) == 43
    assert [k for k, _ in ds.report.examples['image_too_large']] == keys[1:3]
    assert ds.report.examples['image_too_large'][0][1] == '6400 pixels'


def test_missing_unreadable_and_foreign_images_are_skipped(birds_copy):
    k = keys_of(birds_copy)
    image_of(birds_copy, k[0]).unlink()                                    # missing
    image_of(birds_copy, k[1]).unlink(); image_of(birds_copy, k[1]).mkdir()  # unreadable (a folder)
    image_of(birds_copy, k[2]).write_bytes(b'')                            # empty
    image_of(birds_copy, k[3]).write_bytes(b'<html>404 Not Found</html>')  # another kind of file
    with pytest.warns(DataWarning, match='Skipped 4 of 45'): ds = CUBDataset(birds_copy, sizes=(16,), max_skipped=0.1)
    assert ds.report.skipped == {'image_missing': 1, 'image_unreadable': 1, 'not_an_image': 2}
    assert set(k[:4]).isdisjoint(ds.keys) and len(ds) == 41
    ds[0]                                                                  # what is left is served


def half_jpeg(root, key):
    p = image_of(root, key)
    Image.open(p).convert('RGB').resize((200, 200)).save(p, format='JPEG')
    p.write_bytes(p.read_bytes()[:p.stat().st_size // 2])                 # a JPEG cut in half: header intact


def test_truncated_jpeg(birds_copy):
    key = keys_of(birds_copy)[4]; half_jpeg(birds_copy, key)
    ds = CUBDataset(birds_copy, sizes=(16,))                               # header only: opens
    with pytest.raises(UserError, match='corrupt or truncated') as e: ds[ds.keys.index(key)]
    assert one_line(e) and 'skip_corrupt=True' in str(e.value)
    for kw in (dict(preload=True), dict(skip_corrupt=True)):
        with pytest.warns(DataWarning, match='image corrupt or truncated'): ds = CUBDataset(birds_copy, sizes=(16,), **kw)
        assert ds.report.skipped == {'image_corrupt': 1} and key not in ds.keys and len(ds) == 44


def test_bad_bounding_boxes_are_skipped(birds_copy):
    k = keys_of(birds_copy)
    ids = {l.split()[1].rsplit('.', 1)[0]: l.split()[0] for l in (birds_copy/'CUB_200_2011'/'images.txt').read_text().splitlines()}
    bb = birds_copy/'CUB_200_2011'/'bounding_boxes.txt'
    rows = {l.split()[0]: l for l in bb.read_text().splitlines()}
    rows[ids[k[0]]] = f"{ids[k[0]]} nan 3 10 10"; rows[ids[k[1]]] = f"{ids[k[1]]} 500 500 10 10"
    bb.write_text('\n'.join(rows.values()) + '\n')
    with pytest.warns(DataWarning, match='bounding box outside the image'): ds = CUBDataset(birds_copy, sizes=(16,), preload=True)
    assert ds.report.skipped == {'bad_box': 2} and len(ds) == 43


def test_caption_files_in_other_encodings(birds_copy):
    k = keys_of(birds_copy)
    text_of(birds_copy, k[0]).write_bytes('this bird has a café coloured crown\n'.encode('latin-1') * 10)      # Latin-1: read
    text_of(birds_copy, k[1]).write_text('this bird has a grey crown\n' * 10, encoding='utf-16')           # UTF-16 with a BOM: read
    text_of(birds_copy, k[2]).write_bytes(np.random.default_rng(2).bytes(600))                                # random bytes
    text_of(birds_copy, k[3]).write_bytes(b'')                                                                 # empty
    with pytest.warns(DataWarning, match='Skipped 2 of 45'): ds = CUBDataset(birds_copy, sizes=(16,), max_skipped=0.05)
    assert ds.report.skipped == {'captions_not_text': 1, 'captions_empty': 1}
    i, j = ds.keys.index(k[0]), ds.keys.index(k[1])
    assert ds.vocab.decode(ds.ids[i][0]) == ['this', 'bird', 'has', 'a', 'caf', 'coloured', 'crown']
    assert ds.captions[j][0] == 'this bird has a grey crown'


def test_class_without_captions(birds_copy):
    k = keys_of(birds_copy); cls = k[0].split('/')[0]
    shutil.rmtree(birds_copy/'text'/cls); (birds_copy/'text'/cls).mkdir()   # the class folder is there, empty
    with pytest.warns(DataWarning, match='caption file missing'): ds = CUBDataset(birds_copy, sizes=(16,))
    assert ds.report.skipped == {'captions_missing': 1} and ds.report.empty_classes == [cls]
    assert cls in str(ds.report) and 'classes left without images: 1' in str(ds.report)
    for c in {x.split('/')[0] for x in k[:10]}: shutil.rmtree(birds_copy/'text'/c, ignore_errors=True)
    with pytest.raises(UserError, match='10 of 45 images') as e: CUBDataset(birds_copy, sizes=(16,))
    assert one_line(e) and 'caption file missing' in str(e.value) and 'add text/<class>/<image>.txt' in str(e.value)


def test_threshold_sentence(birds_copy):
    k = keys_of(birds_copy)
    for key in k[:3]: image_of(birds_copy, key).unlink()                   # 3 of 45: 6.7%
    with pytest.raises(UserError) as e: CUBDataset(birds_copy, sizes=(16,))
    msg = str(e.value)
    assert one_line(e) and msg.startswith('3 of 45 images') and '6.7%' in msg and 'max_skipped=0.05' in msg
    assert 'image file missing' in msg and k[0] in msg and 'restore those image files' in msg
    assert DataConfig().max_skipped == 0.05
    with pytest.warns(DataWarning): assert len(CUBDataset(birds_copy, sizes=(16,), max_skipped=0.1)) == 42
    with pytest.raises(UserError, match='must be a fraction'): CUBDataset(birds_copy, max_skipped=5)


def test_nothing_usable_is_one_sentence(birds_copy):
    with pytest.raises(UserError, match='None of the 45 images') as e: CUBDataset(birds_copy, captions_per_image=11, max_skipped=1.0)
    assert one_line(e) and 'set captions_per_image=10' in str(e.value)


def test_report_once_and_its_numbers(birds_copy):
    key = keys_of(birds_copy)[0]; image_of(birds_copy, key).unlink()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        ds = CUBDataset(birds_copy, sizes=(16,)); ds[0]; ds[1]; len(ds)
    assert [x.category for x in w] == [DataWarning]                        # shown once, at loading
    r = ds.report
    assert isinstance(r, DataReport) and str(r) in str(w[0].message)
    assert (r.n_listed, r.n_used, r.n_skipped, r.n_classes, r.vocab_size) == (45, 44, 1, 44, len(ds.vocab))
    assert r.caption_counts == {10: 45} and r.examples == {'image_missing': [(key, '')]}
    lens = sorted(len(i) for ids in ds.ids for i in ids)                  # the median splits the lengths in halves
    med = r.caption_words['median']
    assert r.caption_words['max'] == lens[-1] and sum(l <= med for l in lens) >= len(lens) / 2 > sum(l < med for l in lens)
    assert r.cut_share == sum(l > 18 for l in lens) / len(lens)
    lines = str(r).splitlines()
    assert lines[0].endswith('44 of 45 images used, 44 classes, vocabulary %d words' % len(ds.vocab)) and 'image file missing' in lines[-1]


def test_clean_data_is_not_reported(birds_root):
    with warnings.catch_warnings():
        warnings.simplefilter('error', DataWarning)
        ds = CUBDataset(birds_root, sizes=(16,))
    assert ds.report.skipped == {} and ds.report.n_used == len(ds) == 45


def test_data_report_never_stops(birds_copy):
    cfg = Config(); cfg.data.captions_per_image = 11                       # every file has 10: all skipped
    r = data_report(birds_copy, cfg)
    assert r.too_many and r.n_used == 0 and r.skipped == {'captions_few': 45} and 'set captions_per_image=10' in r.stop_sentence()
    k = keys_of(birds_copy)[2]; half_jpeg(birds_copy, k)
    r = data_report(birds_copy)                                            # decodes every image: finds the truncated one
    assert r.skipped == {'image_corrupt': 1} and r.examples['image_corrupt'][0][0] == k and not r.too_many
    assert data_report(birds_copy, decode=False).skipped == {}             # the header alone looks fine
    t = data_report(birds_copy, split='test')
    assert t.split == 'test' and t.n_used == t.n_listed > 0 and t.vocab_size > 3
