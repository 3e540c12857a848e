"""The small models every chapter uses.

All three are ``nn.Sequential`` with named layers, so that fusion, pruning
and quantization can walk them layer by layer, and they take images of shape
``(B, 1, 28, 28)`` (the MLP also accepts ``(B, 784)``).

=====================  ===========  =====================================
model                  parameters   notes
=====================  ===========  =====================================
``LeNet300100()``      266,610      784-300-100-10 MLP (Han et al. 2015)
``LeNet5()``           431,080      Caffe LeNet-5: conv20-conv50-fc500
``SmallCNN()``         421,834      2 x (conv-BN-ReLU-pool), fc128
=====================  ===========  =====================================
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from ._checks import check_int

__all__ = ["LeNet300100", "LeNet5", "SmallCNN"]


class LeNet300100(nn.Sequential):
    """LeNet-300-100: a 784-300-100-10 multilayer perceptron with ReLU.

    266,610 parameters with the default widths (Han et al. 2015 quote 267K).
    """

    def __init__(self, hidden1: int = 300, hidden2: int = 100, num_classes: int = 10) -> None:
        hidden1 = check_int(hidden1, "hidden1", min_value=1)
        hidden2 = check_int(hidden2, "hidden2", min_value=1)
        num_classes = check_int(num_classes, "num_classes", min_value=2)
        super().__init__(OrderedDict([
            ("flatten", nn.Flatten()),
            ("fc1", nn.Linear(784, hidden1)),
            ("relu1", nn.ReLU()),
            ("fc2", nn.Linear(hidden1, hidden2)),
            ("relu2", nn.ReLU()),
            ("fc3", nn.Linear(hidden2, num_classes)),
        ]))


class LeNet5(nn.Sequential):
    """LeNet-5 as in Caffe's MNIST example (the one Han et al. 2015 prune).

    conv 5x5x20 - maxpool - conv 5x5x50 - maxpool - fc 500 - ReLU - fc 10:
    431,080 parameters with the default widths (the paper's 431K).
    """

    def __init__(self, c1: int = 20, c2: int = 50, hidden: int = 500,
                 num_classes: int = 10) -> None:
        c1 = check_int(c1, "c1", min_value=1)
        c2 = check_int(c2, "c2", min_value=1)
        hidden = check_int(hidden, "hidden", min_value=1)
        num_classes = check_int(num_classes, "num_classes", min_value=2)
        super().__init__(OrderedDict([
            ("conv1", nn.Conv2d(1, c1, 5)),          # 28 -> 24
            ("pool1", nn.MaxPool2d(2)),              # 24 -> 12
            ("conv2", nn.Conv2d(c1, c2, 5)),         # 12 -> 8
            ("pool2", nn.MaxPool2d(2)),              # 8 -> 4
            ("flatten", nn.Flatten()),
            ("fc1", nn.Linear(c2 * 4 * 4, hidden)),
            ("relu1", nn.ReLU()),
            ("fc2", nn.Linear(hidden, num_classes)),
        ]))


class SmallCNN(nn.Sequential):
    """Two conv-BN-ReLU-maxpool blocks and a two-layer classifier.

    With the default widths (32, 64, 128): 421,834 parameters, about 4.24 M
    multiply-accumulates per 28x28 image. The widths are arguments so that a
    channel-pruned model is simply a ``SmallCNN`` with smaller widths.
    """

    def __init__(self, c1: int = 32, c2: int = 64, hidden: int = 128,
                 num_classes: int = 10) -> None:
        c1 = check_int(c1, "c1", min_value=1)
        c2 = check_int(c2, "c2", min_value=1)
        hidden = check_int(hidden, "hidden", min_value=1)
        num_classes = check_int(num_classes, "num_classes", min_value=2)
        super().__init__(OrderedDict([
            ("conv1", nn.Conv2d(1, c1, 3, padding=1)),
            ("bn1", nn.BatchNorm2d(c1)),
            ("relu1", nn.ReLU()),
            ("pool1", nn.MaxPool2d(2)),              # 28 -> 14
            ("conv2", nn.Conv2d(c1, c2, 3, padding=1)),
            ("bn2", nn.BatchNorm2d(c2)),
            ("relu2", nn.ReLU()),
            ("pool2", nn.MaxPool2d(2)),              # 14 -> 7
            ("flatten", nn.Flatten()),
            ("fc1", nn.Linear(c2 * 7 * 7, hidden)),
            ("relu3", nn.ReLU()),
            ("fc2", nn.Linear(hidden, num_classes)),
        ]))
