"Tests of attngan.metrics, attngan.evaluator and attngan.evaluation: ground-truth plumbing, each measure against a known answer, caching, errors, evaluate()."
import json, os
from pathlib import Path
import numpy as np, pytest, torch, torchvision
from attngan.config import tiny, MissingPath, InvalidInput
from attngan.data import Vocab
from attngan.layouts import CUBDataset
from attngan.synthbirds import ATTRIBUTES, ATTR_VALUES, PARTS, word_value
from attngan.birdset import load_part_map, make_birds
from attngan import evaluation as E
from attngan import metrics as M
from attngan import evaluator as R
from attngan import pretrain as P
from _inception_standin import standin_inception          # tests/_inception_standin.py, shared with test_evaluate_real.py

torch.set_num_threads(1)


@pytest.fixture(scope='module')
def small(birds_root):
    "The session's small set (60 images, 48 px) read at 32 px: (train, test)."
    return R.load_real(birds_root, 'train', 32), R.load_real(birds_root, 'test', 32)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    "An 800-image set and an evaluator trained on it at 32 px (a few seconds), cached in a temporary folder."
    d = tmp_path_factory.mktemp('m')
    root = make_birds(d/'birds', n=800, size=64, seed=0, progress=False)
    ev, info = R.load_or_train_evaluator(root, 32, cache_dir=d/'cache', width=8, epochs=8, batch_size=16, lr=1e-2,
                                         progress=False, log=lambda s: None)
    return root, ev, info, d


def test_crop_label_map_follows_the_image_pipeline(birds_root):
    ds = CUBDataset(birds_root, 'test', sizes=(32,), vocab=Vocab(Vocab.specials), train=False)
    ds.paths = [birds_root/'parts'/f'{k}.png' for k in ds.keys]              # the label maps, read as images
    for i in range(len(ds)):
        lab = P.crop_label_map(load_part_map(birds_root, ds.keys[i]), ds.boxes[i], 32, ds.bbox_scale)
        via = ((ds[(i, 0)]['images'][0][0] + 1) * 127.5).round().numpy()
        assert lab.shape == (32, 32) and lab.dtype == np.uint8
        assert (via == lab).mean() > 0.8


def test_load_real_and_refusal(birds_root, small, tmp_path):
    train, test = small
    assert test.images.dtype == torch.uint8 and test.images.shape[1:] == (3, 32, 32)
    assert test.class_ids.min() > 150 >= train.class_ids.max()
    assert test.attrs.shape == (len(test), len(ATTRIBUTES)) and len(test.captions_gt[0]) == 10
    with pytest.raises(InvalidInput, match='ground truth'): R.load_real(tmp_path)


def test_named_attributes_and_accuracy(small):
    _, test = small
    for gts, attrs in zip(test.captions_gt, test.attrs.tolist()):
        for gt in gts:
            named = M.named_attributes(gt)
            assert 2 <= len(named) <= 5
            r = M.attribute_accuracy(torch.tensor([attrs]), [named])      # the true attributes recover every named one
            assert r['accuracy'] == 1.0 and 0 < r['chance'] < 1


def test_one_attribute_edits_change_one_value(small):
    _, test = small
    for gt in test.captions_gt[0]:
        toks = [w for w, _, _ in gt]
        edits = M.one_attribute_edits(gt)
        assert len(edits) == len(set(edits)) > 0 and ' '.join(toks) not in edits
        for e in edits:
            et = e.split()
            diff = [t for t, (a, b) in enumerate(zip(toks, et)) if a != b]
            assert len(et) == len(toks) and 1 <= len(diff) <= 2              # the value word (and maybe a/an before it)
            t = diff[-1]; a = gt[t][2]
            assert a is not None and str(word_value(a, gt[t][0])) != et[t]


def test_attention_localisation_known_answers(small):
    _, test = small
    pairs = [M.word_parts(g[0]) for g in test.captions_gt]
    T = max(len(g[0]) for g in test.captions_gt)
    perfect = M.oracle_attention(test.parts, pairs, T, 16)
    r = P.attention_localisation(perfect, test.parts, pairs)                 # true attention on true masks
    assert r['pointing'] == 1.0 and r['absent'] == 0 and r['mass_over_area'] > 3
    u = P.attention_localisation(torch.ones_like(perfect), test.parts, pairs)
    assert abs(u['mass'] - u['area']) < 1e-5 and abs(u['mass_over_area'] - 1) < 1e-4


def test_hard_r_precision():
    f = torch.randn(100, 8)
    assert M.hard_r_precision(f, f, [torch.randn(3, 8) for _ in f])[:2] == (100.0, 0.0)
    m, _, chance = M.hard_r_precision(torch.randn(300, 8), torch.randn(300, 8), [torch.randn(20, 8) for _ in range(300)], seed=1)
    assert abs(chance - 100 / 21) < 0.1 and abs(m - chance) < 3       # 99 draws cover (almost) all 20 edits: ~1/21


def test_diversity_floor_and_pose(small):
    _, test = small
    n = len(test)
    pa, ps = test.attrs, test.parts
    feats = torch.randn(n, 4)
    one = M.diversity(pa, ps, feats, [[0] * 4, [1] * 4], [{}, {}])
    assert all(one[k] == 0 for k in ('unnamed_attributes', 'position_std', 'scale_cv', 'facing', 'feature_distance'))
    many = M.diversity(pa, ps, feats, [list(range(n))], [{}])
    assert many['unnamed_attributes'] > 0 and many['position_std'] > 0


def test_fid_kid_and_inception(small, tmp_path):
    train, test = small
    ext = M.EvaluatorFeatures(R.BirdEvaluator(32, 4))
    same = M.fid_kid(ext, test.images, test.images, kid_subsets=5)
    assert abs(same['fid']) < 1e-4
    state = torch.get_rng_state(); torch.manual_seed(123)
    a = M.fid_kid(ext, test.images[:20], train.images[:20], kid_subsets=5, seed=1)
    after = torch.get_rng_state(); torch.manual_seed(456)
    b = M.fid_kid(ext, test.images[:20], train.images[:20], kid_subsets=5, seed=1)
    torch.manual_seed(123); assert torch.equal(after, torch.get_rng_state())  # the global generator is left as it was
    assert a == b                                                             # KID's subsets follow `seed`, not the global state
    torch.set_rng_state(state)
    with pytest.raises(MissingPath, match='inception_v3_google'): R.InceptionFeatures(None)
    with pytest.raises(MissingPath, match='nope.pth'): R.InceptionFeatures(tmp_path/'nope.pth')
    w = tmp_path/'inception.pth'
    torch.save(torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), w)
    inc = R.InceptionFeatures(w)
    assert inc(test.images[:2]).shape == (2, 2048)
    r = M.fid_kid(inc, test.images[:3], train.images[:3], kid_subsets=2)
    assert np.isfinite(r['fid']) and r['n_real'] == 3


def test_inception_score():
    x = torch.arange(100).float()[:, None]
    m, s = M.inception_score(x, lambda x: torch.nn.functional.one_hot(x[:, 0].long() % 10, 10).float() * 60)
    assert abs(m - 10) < 1e-6
    with pytest.raises(InvalidInput, match='at least 10'): M.inception_score(x[:5], lambda x: x)


def test_evaluator_cache_is_tensors_only_and_reused(trained):
    root, ev, info, d = trained
    folder = next((d/'cache'/'evaluators').iterdir())
    assert sorted(p.name for p in folder.iterdir()) == ['evaluator.json', 'evaluator.pt']
    sd = torch.load(folder/'evaluator.pt', weights_only=True)
    assert all(torch.is_tensor(v) for v in sd.values())
    ev2, info2 = R.load_or_train_evaluator(root, 32, cache_dir=d/'cache', width=8, epochs=8, batch_size=16, lr=1e-2,
                                           log=lambda s: pytest.fail('retrained'))
    assert info2 == info


def test_small_evaluator_beats_chance(trained):
    "Quick bar (32 px, 600 images, seconds of training): big parts' colours well above chance; background, branch near perfect."
    acc = trained[2]['accuracy']['attributes']
    assert acc['background'] > 0.9 and acc['branch'] > 0.9
    assert np.mean([acc[f'{p}_color'] for p in ('head', 'body', 'belly', 'tail')]) > 0.5


def test_evaluate_random_generator_near_chance_real_near_ceiling(trained):
    from attngan.core import Generator
    from attngan.damsm import TextEncoder
    from attngan.sample import Text2Image
    root, ev, info, d = trained
    cfg = tiny(); torch.manual_seed(0)
    ds = CUBDataset(root, 'train', sizes=(32,))
    pipe = Text2Image(Generator(cfg), TextEncoder(len(ds.vocab), cfg.text), ds.vocab, cfg)
    m = E.evaluate(pipe, root, n_captions=100, n_diverse=8, n_samples=4, evaluator=ev, eval_damsm=False, stages=False,
                   out=d/'eval', progress=False, log=lambda s: None)
    aa = m['attribute_accuracy']
    assert abs(aa['generated'] - aa['floor']) < 0.1 and aa['real'] > aa['generated'] + 0.2
    assert m['pointing_game']['real'] > 0.6 and m['fid_evaluator']['generated'] > 5 * m['fid_evaluator']['real']
    assert m['diversity_feature_distance']['real'] > m['diversity_feature_distance']['generated']
    assert 'r_precision' not in m                                              # eval_damsm=False skips it
    pr, rc, vc = m['precision'], m['recall'], m['visual_concepts']
    assert pr['real'] > 0.6 and rc['real'] > 0.6 and pr['floor'] == rc['floor'] == 0   # real halves: near the top; noise: 0
    assert pr['generated'] < 0.1 and rc['generated'] < 0.1                       # a random generator: at the floor
    assert vc['n_concepts'] == 50 and vc['real'] > 0.6 and max(vc['generated'], vc['floor']) < 0.2
    saved = json.loads((d/'eval'/'metrics.json').read_text())
    assert saved['attribute_accuracy'] == aa and (d/'eval'/'metrics.png').stat().st_size > 10_000
    assert saved['precision'] == pr and saved['visual_concepts'] == vc
    txt = E.format_metrics(m)
    assert 'attribute_accuracy' in txt and next(l for l in txt.splitlines() if l.startswith('recall ')).split()[1:3] == [f"{rc['generated']:.4g}", f"{rc['real']:.4g}"]


def _pr_loop(real, fake, k=3):
    "Precision and recall, one distance at a time."
    def radii(x): return [sorted(float((x[i] - x[j]).norm()) for j in range(len(x)) if j != i)[k - 1] for i in range(len(x))]
    def share_in(q, x):
        r = radii(x)
        return float(np.mean([any(float((p - x[j]).norm()) <= r[j] for j in range(len(x))) for p in q]))
    return share_in(fake, real), share_in(real, fake)


def test_precision_recall_matches_a_loop_and_known_answers():
    g = torch.Generator().manual_seed(5)
    for shift, k in ((0., 3), (0.7, 3), (1.5, 3), (0.7, 1)):
        a = torch.randn(35, 4, generator=g, dtype=torch.float64)
        b = torch.randn(25, 4, generator=g, dtype=torch.float64) + shift
        r = M.precision_recall(a, b, k)
        assert (r['precision'], r['recall']) == pytest.approx(_pr_loop(a, b, k), abs=1e-12)
        assert M.precision_recall(a, b, k, max_elements=1) == r                     # one row per chunk: the same
    a = torch.randn(100, 6, generator=g)
    same, far = M.precision_recall(a, a), M.precision_recall(a, a + 50)
    assert same['precision'] == same['recall'] == 1 and far['precision'] == far['recall'] == 0
    collapsed = M.precision_recall(a, a[3:4].expand(40, -1))                       # every image the same real point
    assert collapsed['precision'] == 1 and collapsed['recall'] == 1 / 100
    with pytest.raises(InvalidInput, match='more than 3 real and 3 generated'): M.precision_recall(a, a[:3])
    chunks = M._chunks(10_000, 10_000, 2**24)                                       # memory: 2^24 distances at most per chunk
    assert all((s.stop - s.start) * 10_000 <= 2**24 for s in chunks) and chunks[0].start == 0 and chunks[-1].stop >= 10_000
    assert all(p.stop == n.start for p, n in zip(chunks, chunks[1:]))


def test_kmeans_and_visual_concepts_known_answers():
    g = torch.Generator().manual_seed(2)
    truth = torch.arange(5).repeat_interleave(20)
    pts = 8 * torch.eye(5)[truth] + 0.3 * torch.randn(100, 5, generator=g)        # five blobs
    state = torch.get_rng_state()
    c, lab = M.kmeans(pts, 5, seed=3)
    assert torch.equal(torch.get_rng_state(), state)                               # the global generator is left alone
    assert len(set(zip(truth.tolist(), lab.tolist()))) == 5                        # one cluster per blob
    c2, lab2 = M.kmeans(pts, 5, seed=3)
    assert torch.equal(c, c2) and torch.equal(lab, lab2)
    assert torch.allclose(c[lab[::20]], torch.stack([pts[truth == j].double().mean(0) for j in range(5)]), atol=1e-9)
    same_c, same_lab = M.kmeans(torch.ones(6, 2), 3)                               # fewer distinct points than concepts
    assert torch.equal(same_c[same_lab], torch.ones(6, 2, dtype=torch.float64))
    with pytest.raises(InvalidInput, match='between 1 and 100 concepts'): M.kmeans(pts, 0)
    species = truth * 2 + 100
    con = M.fit_concepts(pts, species)
    assert con['k'] == 5 and M.concept_accuracy(con, pts, species) == 1            # real images against themselves: the ceiling
    assert M.concept_accuracy(con, pts, species.roll(20)) == 0                     # every image given another species
    far = torch.zeros(100, 5); far[:, 2] = 100                                      # "noise": one point, nearest to blob 2
    assert M.concept_accuracy(con, far, species) == 0.2                            # only blob 2's species (a fifth) hits
    assert M.concept_accuracy(con, pts, torch.full((100,), 7)) == 0                # a species the concepts never saw
    mixed = species.clone(); mixed[20:25] = 100                                    # five birds of blob 1 in blob 0's species
    assert M.concept_accuracy(M.fit_concepts(pts, mixed), pts, mixed) == 0.95


def test_concept_features_read_the_species_attributes(trained):
    root, ev, _, _ = trained
    x = R.load_real(root, 'test', 32, limit=6).images
    f = M.concept_features(ev, x)
    sizes = [len(ATTR_VALUES[a]) for a in ATTRIBUTES if a not in ('branch', 'background')]
    assert f.shape == (6, sum(sizes)) and f.dtype == torch.float64
    assert torch.allclose(torch.stack([p.sum(1) for p in f.split(sizes, 1)], 1), torch.ones(6, len(sizes), dtype=torch.float64))
    pred = R.predict(ev, x)[0]
    assert torch.equal(torch.stack([p.argmax(1) for p in f.split(sizes, 1)], 1), pred[:, :len(sizes)])


def test_unknown_words_leave_sentence_features_unchanged():
    "An unknown word is left out before encoding (as the official code does), so it cannot move a caption's vector."
    from attngan.damsm import TextEncoder
    cfg = tiny(); torch.manual_seed(0)
    vocab = Vocab.build(['a red bird with a white belly'])
    te = TextEncoder(len(vocab), cfg.text)
    f = M.sentence_features((te, None, cfg, vocab), ['a red bird', 'a red zzxqj bird', 'zzxqj a red bird qq'])
    assert torch.allclose(f[0], f[1], atol=1e-6) and torch.allclose(f[0], f[2], atol=1e-6)
    with pytest.raises(InvalidInput, match='None of the words'): M.sentence_features((te, None, cfg, vocab), ['zzxqj qq'])


def test_format_metrics_names_the_real_images_column():
    row = E._row(0.5, 0.9, 0.1, 'chance')
    txt = E.format_metrics({'attribute_accuracy': row, 'r_precision': E._row(54.0, 33.4, 1.0, 'chance (1 in 100)')})
    head, rows = txt.splitlines()[0], txt.splitlines()[2:4]
    assert head.split()[:5] == ['measure', 'generated', 'real', 'images', 'floor']
    assert rows[0].split()[:4] == ['attribute_accuracy', '0.5', '0.9', '0.1'] and rows[1].split()[1:3] == ['54', '33.4']
    assert 'a ceiling for attribute accuracy' in txt and 'a reference, which a generator can exceed, for R-precision' in txt


# The Inception Score: torchmetrics' InceptionScore against the hand-written loop, and the row `evaluate` writes.

class _Table(torch.nn.Module):
    "Logits chosen by hand: image i (an index) gets row i."
    def __init__(self, logits): super().__init__(); self.logits = logits
    def forward(self, x): return self.logits[x[:, 0].long()]


def test_inception_score_tm_matches_the_loop():
    idx = torch.arange(100)[:, None]
    table = _Table(torch.randn(100, 12, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 3)
    state = torch.get_rng_state()
    tm = M.inception_score_tm(table, idx, seed=7)
    assert torch.equal(state, torch.get_rng_state())                          # the global generator is left as it was
    with torch.random.fork_rng(devices=[]): torch.manual_seed(7); perm = torch.randperm(100)
    mean, std = M.inception_score(idx[perm], table)                           # the loop, on the order torchmetrics shuffles into
    assert abs(tm['mean'] - mean) < 1e-9 and abs(tm['std'] - std * np.sqrt(10 / 9)) < 1e-9
    assert abs(M.inception_score(idx, table)[0] - tm['mean']) > 1e-3          # another split, another score: the order is followed
    assert (tm['n'], tm['splits']) == (100, 10) and M.inception_score_tm(table, idx[:25])['splits'] == 9
    with pytest.raises(InvalidInput, match='at least 10 images'): M.inception_score_tm(table, idx[:9])


def test_inception_weights_files_refused(tmp_path):
    w = standin_inception(tmp_path/'inception.pth')
    plain = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict()
    assert sorted(torch.load(w)) == sorted(plain)                             # the format of torchvision's file
    x, sd = (torch.rand(3, 3, 32, 32) * 255).byte(), torch.load(w)
    logits = R.InceptionLogits(w)(x)                                          # the file's classifier on the file's pool features
    assert logits.shape == (3, 1000) and torch.allclose(logits, R.InceptionFeatures(w)(x) @ sd['fc.weight'].double().T + sd['fc.bias'].double(), atol=1e-3)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path/'resnet.pth')
    for cls in (R.InceptionFeatures, R.InceptionLogits):
        with pytest.raises(InvalidInput, match=r'resnet\.pth is not an Inception-v3 state_dict \(fc\.weight has another shape'):
            cls(tmp_path/'resnet.pth')
    torch.save({k: v for k, v in torch.load(w).items() if not k.startswith('fc.')}, tmp_path/'trunk.pth')
    R.InceptionFeatures(tmp_path/'trunk.pth')                                 # FID needs no classifier ...
    with pytest.raises(InvalidInput, match=r'has no classifier \(fc\.weight, fc\.bias\)'): R.InceptionLogits(tmp_path/'trunk.pth')
    with pytest.raises(MissingPath, match='The Inception Score needs a local weights file'): R.InceptionLogits(None)
    with pytest.raises(MissingPath, match='nope.pth'): R.InceptionLogits(tmp_path/'nope.pth')


def test_inception_score_row_in_evaluate(birds_root, tmp_path):
    "evaluate(inception_weights=...) writes an inception_score row: the generated images' IS beside the real ones', as the loop computes them."
    from attngan.core import Generator
    from attngan.damsm import TextEncoder
    from attngan.sample import Text2Image
    w = standin_inception(tmp_path/'inception.pth')
    ev, _ = R.load_or_train_evaluator(birds_root, 32, cache_dir=tmp_path/'cache', width=4, epochs=1, batch_size=16,
                                      progress=False, log=lambda s: None)
    cfg = tiny(); torch.manual_seed(0)
    ds = CUBDataset(birds_root, 'train', sizes=(32,))
    pipe = Text2Image(Generator(cfg), TextEncoder(len(ds.vocab), cfg.text), ds.vocab, cfg)
    m = E.evaluate(pipe, birds_root, n_captions=15, n_diverse=2, n_samples=4, evaluator=ev, eval_damsm=False, inception_weights=w,
                   seed=0, stages=False, out=tmp_path/'eval', progress=False, log=lambda s: None)
    r = json.loads((tmp_path/'eval'/'metrics.json').read_text())['inception_score']
    assert r == m['inception_score'] and 'fid_inception' in m
    assert set(r) == {'generated', 'real', 'floor', 'floor_is', 'higher_is_better', 'generated_std', 'real_std', 'n', 'splits'}
    assert (r['n'], r['splits'], r['floor'], r['higher_is_better']) == (15, 8, 1.0, True)    # 15 images: 7 parts of 2 and 1
    real = R.load_real(birds_root, 'test', 32)
    idx, cap = E.pick_captions(real, 15, 0)
    fake = E.generate(pipe, [real.captions[i][c] for i, c in zip(idx, cap)], seed=0)['images']   # the images evaluate drew
    net = R.InceptionLogits(w)
    with torch.random.fork_rng(devices=[]): torch.manual_seed(0); perm = torch.randperm(15)
    for key, x in (('generated', fake), ('real', real.images[torch.as_tensor(idx)])):
        assert abs(r[key] - M.inception_score(net(x)[perm], torch.nn.Identity(), splits=8)[0]) < 1e-9, key
    assert r['generated'] != r['real']
    assert 'inception_score' not in E.evaluate(pipe, birds_root, n_captions=15, n_diverse=2, n_samples=4, evaluator=ev, stages=False,
                                               eval_damsm=False, progress=False, log=lambda s: None)


def test_shipped_yardsticks_are_the_pinned_ones():
    "The shipped evaluation DAMSM was trained with eval_damsm_config() (its folder's name, settings and seed); each shipped evaluator with the settings its folder names."
    import dataclasses
    from attngan.sample import assets_dir, verify_checksums
    cfg, dm = R.eval_damsm_config(), assets_dir()/'eval_damsm'
    folders = sorted(dm.iterdir())
    assert [f.name for f in folders] == [f"n11788_s128_seed0_v1_{cfg.name}_seed{R.EVAL_DAMSM_SEED}"]   # only the current yardstick ships
    verify_checksums(folders[0])
    saved = json.loads((folders[0]/'config.json').read_text())
    assert saved['train']['seed'] == R.EVAL_DAMSM_SEED
    for section in ('text', 'damsm'):
        want = dataclasses.asdict(getattr(cfg, section))
        assert saved[section] == json.loads(json.dumps(want)), section
    want_data = json.loads(json.dumps(dataclasses.asdict(cfg.data))); want_data.pop('root'); saved['data'].pop('root')
    assert saved['data'] == want_data
    trained = json.loads((folders[0]/'damsm_eval.json').read_text())         # what pretrain_damsm measured when it ended
    assert trained['epochs'] == cfg.damsm.epochs and trained['r_precision'] >= 60
    for ev in sorted((assets_dir()/'evaluators').iterdir()):
        verify_checksums(ev)
        info = json.loads((ev/'evaluator.json').read_text())
        assert ev.name.endswith(f"_px{info['size']}_w{info['width']}_e{info['epochs']}_b{info['batch_size']}_lr{info['lr']:g}_seed{info['seed']}_v{R.EVAL_VERSION}")
        assert info['accuracy']['mean'] > 0.95
