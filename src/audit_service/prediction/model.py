"""A real, small model: Gaussian naive Bayes on the iris data shipped with the package.

Trained at start-up from `data/iris.csv` (150 rows, a millisecond) in plain Python, so it is
deterministic and needs no ML dependency; the version is the hash of the training data.
"""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from importlib import resources

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


@dataclass(frozen=True, slots=True)
class _ClassStats:
    label: str
    log_prior: float
    means: tuple[float, ...]
    variances: tuple[float, ...]


class IrisClassifier:
    def __init__(self, rows: list[tuple[tuple[float, ...], str]], version: str) -> None:
        self.version = version
        by_label: dict[str, list[tuple[float, ...]]] = {}
        for features, label in rows:
            by_label.setdefault(label, []).append(features)
        # sklearn's var_smoothing: keeps a feature with tiny spread from dominating.
        epsilon = 1e-9 * max(_variance([f[i] for f, _ in rows]) for i in range(len(FEATURES)))
        self._classes = tuple(
            _ClassStats(
                label=label,
                log_prior=math.log(len(samples) / len(rows)),
                means=tuple(_mean(col) for col in zip(*samples, strict=True)),
                variances=tuple(_variance(col) + epsilon for col in zip(*samples, strict=True)),
            )
            for label, samples in sorted(by_label.items())
        )

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(c.label for c in self._classes)

    def predict(self, features: tuple[float, ...]) -> tuple[str, dict[str, float]]:
        scores = [
            c.log_prior
            + sum(
                -0.5 * math.log(2 * math.pi * var) - (x - mean) ** 2 / (2 * var)
                for x, mean, var in zip(features, c.means, c.variances, strict=True)
            )
            for c in self._classes
        ]
        top = max(scores)
        weights = [math.exp(s - top) for s in scores]
        total = sum(weights)
        probabilities = {
            c.label: round(w / total, 6) for c, w in zip(self._classes, weights, strict=True)
        }
        best = max(probabilities, key=lambda label: probabilities[label])
        return best, probabilities


def _mean(values: tuple[float, ...] | list[float]) -> float:
    return sum(values) / len(values)


def _variance(values: tuple[float, ...] | list[float]) -> float:
    m = _mean(values)
    return sum((v - m) ** 2 for v in values) / len(values)


def load_model() -> IrisClassifier:
    raw = resources.files("audit_service.prediction").joinpath("data/iris.csv").read_bytes()
    rows = [
        (tuple(float(r[name]) for name in FEATURES), r["species"])
        for r in csv.DictReader(raw.decode().splitlines())
    ]
    return IrisClassifier(rows, version=f"iris-gnb-{hashlib.sha256(raw).hexdigest()[:12]}")
