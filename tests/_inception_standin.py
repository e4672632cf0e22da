"A stand-in for torchvision's Inception-v3 ImageNet weights file (inception_v3_google-0cc3c7bd.pth), shared by the tests."
from attngan.evaluator import standin_inception  # noqa: F401  (written once, in nbs/library/evaluator.ipynb)
