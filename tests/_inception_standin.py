"A stand-in for torchvision's Inception-v3 ImageNet weights file (inception_v3_google-0cc3c7bd.pth), shared by the tests."
from pathlib import Path
import torch, torchvision


def standin_inception(path, seed: int = 0) -> Path:
    """A stand-in for inception_v3_google-0cc3c7bd.pth: torchvision's Inception-v3 state_dict (the same keys), random, with
    BatchNorm statistics measured on 8 random images; without them every image gets the same logits and every IS is 1."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d): m.reset_running_stats(); m.momentum = None
        with torch.no_grad(): net.train()(torch.rand(8, 3, 299, 299) * 2 - 1)
    torch.save(net.state_dict(), path)
    return Path(path)
