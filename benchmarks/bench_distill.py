"""Knowledge distillation on MNIST: a student alone vs distilled from a trained teacher.

Teacher: ``SmallCNN`` (422k parameters, 4.2M MACs/image) trained with a
one-cycle schedule. Student: LeNet-300-100 (266k parameters, 0.27M MACs/image:
16x less arithmetic, and no convolutions), trained with Adam for the same
number of steps either alone on the labels or with the Hinton et al. loss
(T = 8, alpha = 0.5). 3 seeds each, scored on the 10,000 MNIST test images.

Goal (issue #6): the distilled student closes >= 50% of the student-teacher
error gap, and its gain exceeds 2 standard deviations.

Usage: ``python benchmarks/bench_distill.py`` (writes benchmarks/results/distill.json).
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import torch

from companion import data, distill, lr, measure, models, train

TRAIN_SIZE, TEACHER_EPOCHS, STUDENT_EPOCHS, SEEDS = 10_000, 6, 20, (0, 1, 2)
CONFIG = distill.KDConfig(temperature=8.0, alpha=0.5)
HINTON = {"teacher": 67, "student alone": 146, "student distilled": 74}  # errors on 10k test
OUT = Path(__file__).parent / "results" / "distill.json"


def main() -> None:
    start = time.perf_counter()
    loaders = data.make_loaders(data.load_mnist(), batch_size=128, train_size=TRAIN_SIZE)
    n_test = len(loaders.test.dataset)
    train.set_seed(0)
    teacher = models.SmallCNN()
    opt = torch.optim.Adam(teacher.parameters(), lr=3e-3)
    steps = TEACHER_EPOCHS * len(loaders.train)
    train.fit(teacher, loaders.train, epochs=TEACHER_EPOCHS, optimizer=opt, progress=False,
              scheduler=lr.make_schedule(opt, "onecycle", total_steps=steps))
    teacher_err = (1 - train.evaluate(teacher, loaders.test)) * n_test

    errors: dict[str, list[float]] = {"student alone": [], "student distilled": []}
    for seed in SEEDS:
        train.set_seed(seed)
        s = models.LeNet300100()
        train.fit(s, loaders.train, epochs=STUDENT_EPOCHS, lr=3e-3, progress=False)
        errors["student alone"].append((1 - train.evaluate(s, loaders.test)) * n_test)
        train.set_seed(seed)
        s = models.LeNet300100()
        distill.distill(s, teacher, loaders.train, epochs=STUDENT_EPOCHS, lr=3e-3, config=CONFIG)
        errors["student distilled"].append((1 - train.evaluate(s, loaders.test)) * n_test)

    a, d = errors["student alone"], errors["student distilled"]
    gain = statistics.fmean(a) - statistics.fmean(d)
    spread = max(statistics.stdev(a), statistics.stdev(d))
    closed = gain / (statistics.fmean(a) - teacher_err)
    rows = [{"model": "teacher (SmallCNN)", "errors": teacher_err, "std": float("nan"),
             "Hinton et al.": HINTON["teacher"]}]
    rows += [{"model": k, "errors": statistics.fmean(v), "std": statistics.stdev(v),
              "Hinton et al.": HINTON[k]} for k, v in errors.items()]
    table = measure.Table(rows, title=f"MNIST test errors out of {n_test:,} "
                                      f"({len(SEEDS)} seeds, students {STUDENT_EPOCHS} epochs)")
    print(table)
    hinton_closed = (HINTON["student alone"] - HINTON["student distilled"]) / (
        HINTON["student alone"] - HINTON["teacher"])
    print(f"gap closed: {closed:.1%} (goal >= 50%; Hinton et al. {hinton_closed:.1%}); "
          f"gain {gain:.1f} errors = {gain / spread:.1f} std (goal > 2)")
    result = {
        "table": table.rows, "errors_per_seed": errors, "teacher_errors": teacher_err,
        "gap_closed": closed, "gain_errors": gain, "gain_in_std": gain / spread,
        "goal_gap_closed_met": closed >= 0.5, "goal_gain_2std_met": gain > 2 * spread,
        "setting": {"train_size": TRAIN_SIZE, "teacher": "SmallCNN()", "teacher_epochs":
                    TEACHER_EPOCHS, "student": "LeNet300100()", "student_epochs": STUDENT_EPOCHS,
                    "temperature": CONFIG.temperature, "alpha": CONFIG.alpha,
                    "seeds": list(SEEDS)},
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "device": str(train.default_device()), "threads": torch.get_num_threads()},
        "seconds": time.perf_counter() - start,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {OUT} in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
