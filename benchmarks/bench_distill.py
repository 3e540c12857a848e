"""Knowledge distillation on MNIST: a student alone vs distilled from a trained teacher.

Teacher: ``SmallCNN`` (422k parameters, 4.2M MACs/image), trained for 6 epochs
with a one-cycle schedule on images jittered by up to 2 pixels (Hinton et al.
also jittered their teacher's inputs). Student: LeNet-300-100 (266k
parameters, 0.27M MACs/image: 16x less arithmetic, and no convolutions),
trained with Adam for the same number of steps either alone on the labels or
with the Hinton et al. loss (T = 8, alpha = 0.5) on the teacher's logits,
computed once for the 50,000 training images (the teacher is frozen). 3 seeds
each, scored on the 10,000 MNIST test images (validation errors are recorded
too). One PyTorch thread: on a shared machine several threads per process
slow everything down.

Two distilled students: one on the plain training images (the teacher's
logits cached once), and one on the teacher's jittered images (``COPIES``
jittered copies of the training set, the teacher's logits cached once for
each, ``STUDENT_EPOCHS / COPIES`` passes over them: the same number of
steps). The headline uses the better of the two on the *validation* images.

Baselines: a student trained alone for the same steps, and a stronger one,
the same student trained alone on the same jittered images the teacher saw
(the teacher's data augmentation is part of what distillation hands over,
so a fair baseline may have it too). The baseline of the headline figure is
the better of the two on the *validation* images, like the distilled student.

Goal (issue #6): the distilled student closes >= 50% of the student-teacher
error gap, and its gain exceeds 2 standard deviations.

Usage: ``python benchmarks/bench_distill.py [--threads N]`` (writes
benchmarks/results/distill.json; about 12 minutes on one CPU thread).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from _record import Record
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

from companion import data, distill, lr, measure, models, train

TRAIN_SIZE, TEACHER_EPOCHS, STUDENT_EPOCHS, SEEDS, JITTER = 50_000, 6, 20, (0, 1, 2), 2
COPIES = 4  # jittered copies of the training set for the second distilled student
CONFIG = distill.KDConfig(temperature=8.0, alpha=0.5)
HINTON = {"teacher": 67, "student alone": 146, "student distilled": 74}  # errors on 10k test
OUT = Path(__file__).parent / "results" / "distill.json"


def shift_images(x: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image of ``x`` (B, C, H, W) by its own random offset of up to ``pixels``."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pixels,) * 4).permute(0, 2, 3, 1)          # (B, H+2p, W+2p, C)
    off = torch.randint(0, 2 * pixels + 1, (b, 2), generator=generator)
    rows = (off[:, :1] + torch.arange(h))[:, :, None]              # (B, H, 1)
    cols = (off[:, 1:] + torch.arange(w))[:, None, :]              # (B, 1, W)
    return padded[torch.arange(b)[:, None, None], rows, cols].permute(0, 3, 1, 2)


class Jitter:
    """A training loader whose images are shifted at random by up to ``pixels``."""

    def __init__(self, loader: Iterable, pixels: int, seed: int = 0) -> None:
        self.loader, self.pixels = loader, pixels
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            yield shift_images(x, self.pixels, self.generator), y


def jittered_copies(loader: DataLoader, pixels: int, copies: int, seed: int = 0) -> DataLoader:
    """A shuffled loader over ``copies`` randomly shifted copies of ``loader``'s training
    images, with ``loader``'s batch size (fixed images, so a teacher's logits can be cached)."""
    x, y = loader.dataset.tensors
    g = torch.Generator().manual_seed(seed)
    xs = torch.cat([shift_images(chunk, pixels, g) for _ in range(copies)
                    for chunk in x.split(10_000)])
    dataset = TensorDataset(xs, y.repeat(copies))
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=None, generator=gen, sampler=BatchSampler(
        RandomSampler(dataset, generator=gen), loader.sampler.batch_size, drop_last=False))


def errors(model: torch.nn.Module, loader: Iterable) -> float:
    return (1 - train.evaluate(model, loader)) * len(loader.dataset)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="PyTorch threads (default 1)")
    threads = parser.parse_args().threads
    torch.set_num_threads(threads)
    record = Record(threads=threads, baselines={
        "accuracy": "the same student trained alone for the same steps, on plain images and on "
                    "the teacher's jittered images; the headline uses the better one on "
                    "validation"})
    start = time.perf_counter()
    loaders = data.make_loaders(data.load_mnist(), batch_size=128, train_size=TRAIN_SIZE)
    n_test = len(loaders.test.dataset)

    train.set_seed(0)
    teacher = models.SmallCNN()
    opt = torch.optim.Adam(teacher.parameters(), lr=4e-3)
    steps = TEACHER_EPOCHS * len(loaders.train)
    train.fit(teacher, Jitter(loaders.train, JITTER), epochs=TEACHER_EPOCHS, optimizer=opt,
              progress=False, scheduler=lr.make_schedule(opt, "onecycle", total_steps=steps))
    teacher_err, teacher_val = errors(teacher, loaders.test), errors(teacher, loaders.val)
    t_teacher = time.perf_counter() - start
    print(f"teacher: {teacher_err:.0f} test errors ({t_teacher:.0f} s)", flush=True)
    cached = distill.cache_teacher_logits(teacher, loaders.train)
    cached_jitter = distill.cache_teacher_logits(
        teacher, jittered_copies(loaders.train, JITTER, COPIES))
    t_cache = time.perf_counter() - start - t_teacher
    steps = {"plain": len(cached) * STUDENT_EPOCHS,                 # optimizer steps
             "jittered": len(cached_jitter) * (STUDENT_EPOCHS // COPIES)}
    assert STUDENT_EPOCHS % COPIES == 0 and abs(steps["jittered"] / steps["plain"] - 1) < 0.01

    names = ("student alone", "student alone + jitter", "student distilled",
             "student distilled + jitter")
    test_err: dict[str, list[float]] = {k: [] for k in names}
    val_err: dict[str, list[float]] = {k: [] for k in names}
    for seed in SEEDS:
        for name in names:
            train.set_seed(seed)
            s = models.LeNet300100()
            if name == "student alone":
                train.fit(s, loaders.train, epochs=STUDENT_EPOCHS, lr=3e-3, progress=False)
            elif name == "student alone + jitter":
                train.fit(s, Jitter(loaders.train, JITTER, seed=seed), epochs=STUDENT_EPOCHS,
                          lr=3e-3, progress=False)
            elif name == "student distilled":
                distill.distill_(s, teacher, cached, epochs=STUDENT_EPOCHS, lr=3e-3,
                                config=CONFIG)
            else:                       # the same steps: COPIES times the data, 1/COPIES epochs
                distill.distill_(s, teacher, cached_jitter, epochs=STUDENT_EPOCHS // COPIES,
                                lr=3e-3, config=CONFIG)
            test_err[name].append(errors(s, loaders.test))
            val_err[name].append(errors(s, loaders.val))
            print(f"seed {seed}, {name}: {test_err[name][-1]:.0f} test errors "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)

    baseline = min(("student alone", "student alone + jitter"),
                   key=lambda k: statistics.fmean(val_err[k]))      # chosen on validation
    distilled = min(("student distilled", "student distilled + jitter"),
                    key=lambda k: statistics.fmean(val_err[k]))     # likewise
    d = test_err[distilled]
    results = {}
    for base in ("student alone", "student alone + jitter"):
        a = test_err[base]
        gain = statistics.fmean(a) - statistics.fmean(d)
        spread = max(statistics.stdev(a), statistics.stdev(d))
        results[base] = {"gap_closed": gain / (statistics.fmean(a) - teacher_err),
                         "gain_errors": gain, "gain_in_std": gain / spread,
                         "goal_gap_closed_met": gain / (statistics.fmean(a) - teacher_err) >= 0.5,
                         "goal_gain_2std_met": gain > 2 * spread}
    rows = [{"model": "teacher (SmallCNN)", "errors": teacher_err, "std": float("nan"),
             "val errors": teacher_val, "Hinton et al.": HINTON["teacher"]}]
    rows += [{"model": k, "errors": statistics.fmean(v), "std": statistics.stdev(v),
              "val errors": statistics.fmean(val_err[k]),
              "Hinton et al.": HINTON.get(k, float("nan"))} for k, v in test_err.items()]
    table = measure.Table(rows, title=f"MNIST test errors out of {n_test:,} "
                                      f"({len(SEEDS)} seeds, students {STUDENT_EPOCHS} epochs, "
                                      f"{TRAIN_SIZE:,} training images)")
    print(table)
    hinton_closed = (HINTON["student alone"] - HINTON["student distilled"]) / (
        HINTON["student alone"] - HINTON["teacher"])
    for base, r in results.items():
        print(f"against {base}: gap closed {r['gap_closed']:.1%} (goal >= 50%; Hinton et al. "
              f"{hinton_closed:.1%}); gain {r['gain_errors']:.1f} errors = "
              f"{r['gain_in_std']:.1f} std (goal > 2)")
    print(f"headline (the better on validation of each side): {distilled} against {baseline}")
    result = {
        "table": table.rows, "test_errors_per_seed": test_err, "val_errors_per_seed": val_err,
        "teacher_test_errors": teacher_err, "teacher_val_errors": teacher_val,
        "headline_baseline": baseline, "headline_distilled": distilled, **results[baseline],
        "against": results,
        "hinton_gap_closed": hinton_closed,
        "setting": {"train_size": TRAIN_SIZE, "teacher": "SmallCNN()", "teacher_epochs":
                    TEACHER_EPOCHS, "teacher_jitter_pixels": JITTER,
                    "student": "LeNet300100()", "student_epochs": STUDENT_EPOCHS,
                    "student_optimizer": "Adam, lr 3e-3, batch 128",
                    "temperature": CONFIG.temperature, "alpha": CONFIG.alpha,
                    "jittered_copies": COPIES, "student_steps": steps, "seeds": list(SEEDS),
                    "device": str(train.default_device())},
        "seconds_teacher": t_teacher, "seconds_cache_logits": t_cache,
    }
    record.write(OUT, result)


if __name__ == "__main__":
    main()
