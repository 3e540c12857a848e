import numpy as np
import pytest
import torch

from companion import data


def test_synthetic_shapes_and_range(tiny_data):
    assert tiny_data.train.x.shape == (256, 28, 28)
    assert tiny_data.train.x.dtype == np.float32 and tiny_data.train.y.dtype == np.int64
    assert 0 <= tiny_data.train.x.min() and tiny_data.train.x.max() < 1


def test_make_loaders_shapes(tiny_data):
    loaders = data.make_loaders(tiny_data, batch_size=32)
    x, y = next(iter(loaders.train))
    assert x.shape == (32, 1, 28, 28) and y.shape == (32,)
    flat = data.make_loaders(tiny_data, batch_size=16, flatten=True, train_size=64)
    x, _ = next(iter(flat.train))
    assert x.shape == (16, 784)
    assert len(flat.train.dataset) == 64


def test_make_loaders_shuffle_is_seeded(tiny_data):
    def order(seed: int, epochs: int = 1) -> torch.Tensor:
        # each image is identified by its pixels: the training images in the order given
        loader = data.make_loaders(tiny_data, 8, seed=seed).train
        return torch.cat([x.flatten(1) for _ in range(epochs) for x, _ in loader])

    plain = torch.from_numpy(tiny_data.train.x).flatten(1)
    a, b, c = order(3), order(3), order(4)
    assert torch.equal(a, b)                     # the same seed: the same order
    assert not torch.equal(a, c)                 # another seed: another order
    assert not torch.equal(a, plain)             # shuffled, not the stored order
    # a permutation of the training set: every image once per epoch
    assert sorted(map(tuple, a.tolist())) == sorted(map(tuple, plain.tolist()))
    first, second = order(3, epochs=2).chunk(2)
    assert not torch.equal(first, second)        # a new order each epoch


def test_keras_arrays(tiny_data):
    x, y = data.keras_arrays(tiny_data.test)
    assert x.shape == (128, 28, 28, 1) and x.dtype == np.float32 and y.dtype == np.int64
    x, _ = data.keras_arrays(tiny_data.test, flatten=True)
    assert x.shape == (128, 784)


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"batch_size": 1.5}, {"train_size": 0}])
def test_make_loaders_rejects_bad_input(tiny_data, bad):
    with pytest.raises((ValueError, TypeError)):
        data.make_loaders(tiny_data, **{"batch_size": 8, **bad})


def test_make_loaders_rejects_non_dataset():
    with pytest.raises(TypeError, match="dataset"):
        data.make_loaders(np.zeros((3, 28, 28)))


def test_split_length_mismatch():
    with pytest.raises(ValueError, match="differ"):
        data.Split(np.zeros((3, 28, 28), np.float32), np.zeros(2, np.int64))


def test_load_mnist_full(tmp_path):
    ds = data.load_mnist(cache_dir=tmp_path)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (50_000, 10_000, 10_000)
    assert ds.train.x.dtype == np.float32 and ds.train.x.shape[1:] == (28, 28)
    assert 0 <= ds.test.x.min() and ds.test.x.max() < 1
    assert set(np.unique(ds.test.y)) == set(range(10))
    # the cache is lossless: pixels are exactly k/256
    assert np.allclose(ds.val.x * 256, np.round(ds.val.x * 256))
    again = data.load_mnist(cache_dir=tmp_path)   # from the .npz cache
    assert np.array_equal(again.test.x, ds.test.x)


def test_load_mnist_checks_hash(tmp_path, monkeypatch):
    bad = tmp_path / "mnist.pkl.gz"
    bad.write_bytes(b"not the real file")
    monkeypatch.setattr(data, "_mnist_pickle_path", lambda: bad)
    with pytest.raises(ValueError, match="SHA-256"):
        data.load_mnist(cache_dir=tmp_path / "cache")


def test_fashion_mnist_missing_names_install_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.load_fashion_mnist(root=tmp_path)


def test_training_loader_gives_the_batches_of_a_shuffled_dataloader():
    from torch.utils.data import DataLoader

    ds = data._synthetic_images(n_train=200, n_test=20, seed=0)
    ours = data.make_loaders(ds, 32, flatten=True, seed=5).train
    plain = DataLoader(ours.dataset, batch_size=32, shuffle=True,
                       generator=torch.Generator().manual_seed(5))
    for _ in range(3):                                    # the shuffling moves on alike
        for (x1, y1), (x2, y2) in zip(ours, plain, strict=True):
            assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert len(ours) == len(plain) == 7
