"The demo's DAMSM: the shipped one where it fits the preset (the whole budget to the GAN), else pre-trained in the run."
import json
import attngan.demo as demo_mod
from attngan.config import tiny
from attngan.pretrain_runs import pretrain_damsm


def test_demo_takes_a_fitting_damsm_or_pretrains_one(tmp_path, monkeypatch, one_thread):
    damsm = tmp_path/'shipped'
    pretrain_damsm(tiny(), damsm, data='synth', epochs=1, progress=False, log=lambda *a: None)
    monkeypatch.setattr(demo_mod, 'shipped_damsm', lambda cfg: damsm)   # a tiny stand-in for the shipped model's DAMSM
    said = []
    s = demo_mod.run_demo(tmp_path/'a', minutes=0.3, preset='tiny', quiet=True, log=said.append, evaluate=False)
    assert s['damsm'] == str(damsm) and not (tmp_path/'a'/'damsm').exists()
    assert '(0.0 DAMSM' in said[0] and any("DAMSM: the shipped model's" in l for l in said)
    trained = json.loads((tmp_path/'a'/'config.json').read_text())
    assert trained['text'] == json.loads((damsm/'config.json').read_text())['text']
    s = demo_mod.run_demo(tmp_path/'b', minutes=0.3, preset='tiny', quiet=True, log=said.append, evaluate=False, pretrain=True)
    assert s['damsm'] == str(tmp_path/'b'/'damsm') and (tmp_path/'b'/'damsm'/'damsm.pt').is_file()
