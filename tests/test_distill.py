from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from state_check import assert_unchanged
from torch import nn

from companion import data, distill, models, train


def direct_kd(s, t, y, T, alpha):
    p_t = torch.softmax(t / T, dim=1)
    log_p_s = torch.log_softmax(s / T, dim=1)
    kl = (p_t * (torch.log(p_t) - log_p_s)).sum(1).mean()
    ce = -torch.log_softmax(s, dim=1)[torch.arange(len(y)), y].mean()
    return alpha * T * T * kl + (1 - alpha) * ce


@pytest.mark.parametrize("T,alpha", [(1.0, 0.5), (4.0, 0.9), (10.0, 1.0), (2.0, 0.0)])
def test_kd_loss_matches_direct_formula(T, alpha):
    s, t = torch.randn(16, 10), torch.randn(16, 10) * 3
    y = torch.randint(0, 10, (16,))
    got = distill.kd_loss(s, t, y, temperature=T, alpha=alpha)
    assert torch.allclose(got, direct_kd(s, t, y, T, alpha), atol=1e-5)


def test_kd_loss_zero_when_student_equals_teacher_and_alpha_one():
    z = torch.randn(8, 10)
    assert distill.kd_loss(z, z, None, temperature=3.0, alpha=1.0).abs() < 1e-6


def test_soft_gradient_scale_comparable_across_temperatures():
    torch.manual_seed(0)
    s0, t = torch.randn(64, 10), torch.randn(64, 10)
    norms, raw = [], []
    for T in (2.0, 5.0, 10.0, 20.0):
        s = s0.clone().requires_grad_(True)
        distill.kd_loss(s, t, None, temperature=T, alpha=1.0).backward()
        norms.append(s.grad.norm().item())
        s2 = s0.clone().requires_grad_(True)
        F.kl_div(F.log_softmax(s2 / T, 1), F.softmax(t / T, 1), reduction="batchmean").backward()
        raw.append(s2.grad.norm().item())
    assert max(norms) / min(norms) < 2.0          # with T^2: same scale
    assert raw[0] / raw[-1] > 50                   # without: shrinks like 1/T^2


def test_bad_input():
    s, t, y = torch.randn(4, 10), torch.randn(4, 10), torch.randint(0, 10, (4,))
    with pytest.raises(ValueError, match="temperature"):
        distill.kd_loss(s, t, y, temperature=0.0, alpha=0.5)
    with pytest.raises(ValueError, match="temperature"):
        distill.kd_loss(s, t, y, temperature=-1.0, alpha=0.5)
    for a in (-0.1, 1.5):
        with pytest.raises(ValueError, match="alpha"):
            distill.kd_loss(s, t, y, temperature=2.0, alpha=a)
    with pytest.raises(ValueError, match="teacher_logits"):
        distill.kd_loss(s, torch.randn(4, 5), y, temperature=2.0, alpha=0.5)
    with pytest.raises(ValueError, match="labels"):
        distill.kd_loss(s, t, None, temperature=2.0, alpha=0.5)
    with pytest.raises(TypeError, match="student_logits"):
        distill.kd_loss([1.0], t, y, temperature=2.0, alpha=0.5)
    with pytest.raises(ValueError, match="alpha"):
        distill.KDConfig(alpha=2.0)


def test_distill_trains_student_and_leaves_teacher_untouched(tiny_data):
    loaders = data.make_loaders(tiny_data, 32, flatten=True)
    train.set_seed(0)
    teacher = models.LeNet300100(64, 32)
    train.fit(teacher, loaders.train, epochs=5, lr=3e-3, progress=False, device="cpu")
    teacher.train()  # mode must be restored after distillation
    teacher.zero_grad(set_to_none=True)
    student = models.LeNet300100(16, 8)
    with assert_unchanged(teacher):      # weights, train mode, no gradients left
        hist = distill.distill_(student, teacher, loaders.train, epochs=5,
                                val_loader=loaders.val, config=distill.KDConfig(4.0, 0.7),
                                lr=1e-2, device="cpu")
    assert hist.steps == 5 * len(loaders.train)
    assert train.evaluate(teacher, loaders.val) > 0.9
    assert hist.final_val_acc > 0.6


def test_hint_distillation_runs(tiny_data):
    loaders = data.make_loaders(tiny_data, 32, flatten=True)
    teacher, student = models.LeNet300100(64, 32), models.LeNet300100(16, 8)
    hint = distill.Hint("relu1", "relu1", nn.Linear(16, 64), weight=0.5)
    reg_before = hint.regressor.weight.clone()
    hist = distill.distill_(student, teacher, loaders.train, hint=hint, device="cpu")
    assert hist.steps == len(loaders.train)
    assert not torch.equal(reg_before, hint.regressor.weight)  # regressor is trained
    assert all(p.grad is None for p in teacher.parameters())
    with pytest.raises(ValueError, match="no layer"):
        distill.distill_(student, teacher, loaders.train, device="cpu",
                        hint=distill.Hint("nope", "relu1", nn.Linear(16, 64)))


def test_student_must_differ_from_teacher(tiny_data):
    loaders = data.make_loaders(tiny_data, 32, flatten=True)
    m = models.LeNet300100(8, 8)
    with pytest.raises(ValueError, match="different"):
        distill.distill_(m, m, loaders.train, device="cpu")


def _trained_teacher(loaders, seed=0):
    train.set_seed(seed)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Dropout(0.3),
                            nn.Linear(64, 10))
    train.fit(teacher, loaders.train, epochs=2, lr=3e-3, progress=False, device="cpu")
    return teacher


def test_cache_teacher_logits_are_the_eval_mode_logits_in_loader_order(tiny_data):
    loaders = data.make_loaders(tiny_data, 32, flatten=True)
    teacher = _trained_teacher(loaders)
    teacher.train()                      # dropout on: the cache must use eval mode anyway
    with assert_unchanged(teacher):      # weights and every mode restored
        cached = distill.cache_teacher_logits(teacher, loaders.train, batch_size=100)
    assert len(cached) == len(loaders.train) and len(next(iter(cached))[0]) == 32
    teacher.eval()
    seen = 0
    for x, y, z in cached:
        assert x.shape == (len(y), 784) and z.shape == (len(y), 10)
        with torch.no_grad():
            assert torch.allclose(z, teacher(x), atol=1e-5)
        seen += len(y)
    assert seen == len(loaders.train.dataset)


def test_distill_from_cached_logits_equals_distill_with_the_teacher(tiny_data):
    teacher = _trained_teacher(data.make_loaders(tiny_data, 32, flatten=True))
    plain = data.make_loaders(tiny_data, 32, flatten=True, seed=5).train
    cached = distill.cache_teacher_logits(
        teacher, data.make_loaders(tiny_data, 32, flatten=True, seed=5).train)
    students = []
    for loader in (plain, cached):
        train.set_seed(1)
        s = models.LeNet300100(16, 8)
        h = distill.distill_(s, teacher, loader, epochs=2, lr=1e-2, device="cpu",
                            config=distill.KDConfig(4.0, 0.7))
        students.append((s, h))
    (a, ha), (b, hb) = students
    assert ha.steps == hb.steps == 2 * len(plain)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-4)
    assert ha.train_loss == pytest.approx(hb.train_loss, rel=1e-4)


def test_cached_logits_of_another_teacher_are_refused(tiny_data):
    loaders = data.make_loaders(tiny_data, 32, flatten=True)
    cached = distill.cache_teacher_logits(_trained_teacher(loaders, 0), loaders.train)
    other = _trained_teacher(loaders, 1)
    with pytest.raises(ValueError, match="do not match the teacher"):
        distill.distill_(models.LeNet300100(16, 8), other, cached, device="cpu")


def test_cache_teacher_logits_bad_input(tiny_data):
    loaders = data.make_loaders(tiny_data, 32, flatten=True)
    teacher = models.LeNet300100(16, 8)
    with pytest.raises(TypeError, match="teacher"):
        distill.cache_teacher_logits("teacher", loaders.train)
    with pytest.raises(TypeError, match="loader"):
        distill.cache_teacher_logits(teacher, list(loaders.train))
    with pytest.raises(ValueError, match="batch_size"):
        distill.cache_teacher_logits(teacher, loaders.train, batch_size=0)
    triples = torch.utils.data.DataLoader(
        distill.cache_teacher_logits(teacher, loaders.train).dataset, batch_size=8)
    with pytest.raises(ValueError, match=r"\(input, label\) pairs"):
        distill.cache_teacher_logits(teacher, triples)
    cached = distill.cache_teacher_logits(teacher, loaders.train)
    with pytest.raises(ValueError, match="hint"):
        distill.distill_(models.LeNet300100(16, 8), teacher, cached, device="cpu",
                        hint=distill.Hint("relu1", "relu1", nn.Linear(16, 16)))


# --------------------------------------------------------------------------- regressions
@pytest.mark.parametrize("labels,exc", [
    ([0, 1, 2, 3], TypeError),                       # not a tensor
    (torch.zeros(4), TypeError),                     # float labels
    (torch.zeros(4, dtype=torch.bool), TypeError),
    (torch.zeros(4, 1, dtype=torch.long), ValueError),
    (torch.zeros(3, dtype=torch.long), ValueError),
    (torch.full((4,), 10), ValueError),              # class 10 of 10
    (torch.full((4,), -1), ValueError),
])
def test_kd_loss_checks_labels(labels, exc):
    s, t = torch.randn(4, 10), torch.randn(4, 10)
    with pytest.raises(exc, match="labels"):
        distill.kd_loss(s, t, labels, temperature=2.0, alpha=0.5)


def test_kd_loss_checks_logits():
    s, y = torch.randn(4, 10), torch.randint(0, 10, (4,))
    with pytest.raises(TypeError, match="teacher_logits"):
        distill.kd_loss(s, [[0.0] * 10] * 4, y, temperature=2.0, alpha=0.5)
    with pytest.raises(TypeError, match="teacher_logits"):
        distill.kd_loss(s, torch.zeros(4, 10, dtype=torch.long), y, temperature=2.0, alpha=0.5)
    with pytest.raises(ValueError, match="teacher_logits"):
        distill.kd_loss(s, torch.randn(3, 10), y, temperature=2.0, alpha=0.5)
    with pytest.raises(ValueError, match="student_logits"):
        distill.kd_loss(torch.randn(4, 10, 1), torch.randn(4, 10, 1), y, temperature=2.0,
                        alpha=0.5)


def test_hint_loss_checks_its_inputs():
    reg = nn.Linear(3, 5)
    with pytest.raises(TypeError, match="teacher_features"):
        distill.hint_loss(torch.randn(4, 3), [1.0], reg)
    with pytest.raises(TypeError, match="student_features"):
        distill.hint_loss((torch.randn(4, 3),), torch.randn(4, 5), reg)
    with pytest.raises(TypeError, match="student_features"):
        distill.hint_loss(torch.ones(4, 3, dtype=torch.long), torch.randn(4, 5), reg)
    with pytest.raises(ValueError, match="regressor cannot map student_features"):
        distill.hint_loss(torch.randn(4, 7), torch.randn(4, 5), reg)
    with pytest.raises(ValueError, match="teacher features"):
        distill.hint_loss(torch.randn(4, 3), torch.randn(4, 6), reg)
    with pytest.raises(TypeError, match="regressor must return"):
        distill.hint_loss(torch.randn(4, 3), torch.randn(4, 5), _Pair())
    with pytest.raises(TypeError, match="regressor"):
        distill.Hint("a", "b", lambda x: x)
    with pytest.raises(ValueError, match="weight"):
        distill.Hint("a", "b", nn.Identity(), weight=float("nan"))


class _Pair(nn.Module):
    def forward(self, x):
        return x, x


def test_distill_refuses_an_empty_loader(empty_loader):
    with pytest.raises(ValueError, match="train_loader"):
        distill.distill_(nn.Linear(4, 3), nn.Linear(4, 3), empty_loader, device="cpu")


def test_distill_checks_its_options(tiny_data):
    loaders = data.make_loaders(tiny_data, 32, flatten=True)
    s, t = models.LeNet300100(8, 8), models.LeNet300100(8, 8)
    for kwargs, exc, name in [({"config": (4.0, 0.9)}, TypeError, "config"),
                              ({"lr": float("nan")}, ValueError, "lr"),
                              ({"hint": "relu1"}, TypeError, "hint"),
                              ({"output_fn": 3}, TypeError, "output_fn")]:
        with pytest.raises(exc, match=name):
            distill.distill_(s, t, loaders.train, device="cpu", **kwargs)


@dataclass
class _DataOut:          # the shape of a HuggingFace ModelOutput, without the library
    logits: torch.Tensor
    hidden: torch.Tensor | None = None


class _Wrapped(nn.Module):
    def __init__(self, net, kind):
        super().__init__()
        self.net, self.kind = net, kind

    def forward(self, x):
        z = self.net(x)
        if self.kind == "dataclass":
            return _DataOut(z)
        if self.kind == "dict":
            return {"logits": z, "aux": z.detach()}
        return (z, z.detach().sum())


@pytest.mark.parametrize("kind", ["dataclass", "dict", "tuple"])
def test_distill_takes_structured_outputs(tiny_data, kind):
    histories, students = [], []
    for wrap in (False, True):
        loaders = data.make_loaders(tiny_data, 32, flatten=True)
        train.set_seed(0)
        teacher, student = models.LeNet300100(32, 16), models.LeNet300100(16, 8)
        if wrap:
            teacher, student = _Wrapped(teacher, kind), _Wrapped(student, kind)
        histories.append(distill.distill_(student, teacher, loaders.train, epochs=1,
                                         val_loader=loaders.val, device="cpu"))
        students.append(student)
    assert histories[1].train_loss == histories[0].train_loss  # bit-identical
    assert histories[1].val_acc == histories[0].val_acc
    assert all(torch.equal(a, b) for a, b in zip(students[0].state_dict().values(),
                                                   students[1].state_dict().values(),
                                                   strict=True))


def test_distill_output_fn_and_cache(tiny_data):
    loaders = data.make_loaders(tiny_data, 32, flatten=True)
    pick = lambda out: out["scores"]  # noqa: E731
    teacher = _Scores(models.LeNet300100(32, 16))
    student = _Scores(models.LeNet300100(16, 8))
    with pytest.raises(TypeError, match="output_fn"):
        distill.distill_(student, teacher, loaders.train, device="cpu")
    hist = distill.distill_(student, teacher, loaders.train, device="cpu", output_fn=pick)
    assert hist.steps == len(loaders.train)
    cached = distill.cache_teacher_logits(teacher, loaders.train, output_fn=pick)
    hist = distill.distill_(student, teacher, cached, device="cpu", output_fn=pick)
    assert hist.steps == len(loaders.train)


class _Scores(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return {"scores": self.net(x)}
