"""POST /predict: who may call it, what it answers, what it refuses, the per-user limit."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import pytest

from audit_service.prediction.model import FEATURES, load_model
from tests.conftest import Harness, make_settings, start_harness

SETOSA = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
VERSICOLOR = {"sepal_length": 6.0, "sepal_width": 2.9, "petal_length": 4.5, "petal_width": 1.5}
VIRGINICA = {"sepal_length": 6.9, "sepal_width": 3.1, "petal_length": 5.7, "petal_width": 2.3}
EXAMPLES = [("setosa", SETOSA), ("versicolor", VERSICOLOR), ("virginica", VIRGINICA)]


def problem(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["type"] and body["title"]
    assert body["request_id"] == r.headers["x-request-id"]
    return body


async def test_anonymous_is_401_and_recorded(h: Harness) -> None:
    r = await h.client.post("/predict", json=SETOSA)
    problem(r, 401)
    assert "label" not in r.text
    e = await h.last_event()
    assert (e.action, e.module, e.outcome, e.status_code, e.actor_type) == (
        "prediction.created",
        "prediction",
        "denied",
        401,
        "anonymous",
    )


async def test_bad_token_is_401(h: Harness) -> None:
    r = await h.client.post(
        "/predict", json=SETOSA, headers={"Authorization": "Bearer not.a.token"}
    )
    problem(r, 401)


@pytest.mark.parametrize(("label", "features"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
async def test_classifies_each_species_deterministically(
    h: Harness, label: str, features: dict[str, float]
) -> None:
    headers = await h.auth("pat", role="user")
    first = await h.client.post("/predict", headers=headers, json=features)
    second = await h.client.post("/predict", headers=headers, json=features)
    assert first.status_code == second.status_code == 200, first.text
    body = first.json()
    assert body["label"] == label
    assert set(body["probabilities"]) == {"setosa", "versicolor", "virginica"}
    assert all(0.0 <= p <= 1.0 for p in body["probabilities"].values())
    assert math.isclose(sum(body["probabilities"].values()), 1.0, abs_tol=1e-4)
    assert max(body["probabilities"], key=body["probabilities"].__getitem__) == label
    assert body["probabilities"][label] > 0.5
    assert second.json() == body  # deterministic, same model_version
    assert body["model_version"] == h.app.state.predictor.version
    assert body["model_version"].startswith("iris-gnb-")


async def test_model_version_is_stable_across_inputs_and_loads(h: Harness) -> None:
    headers = await h.auth()
    versions = set()
    for _, features in EXAMPLES:
        r = await h.client.post("/predict", headers=headers, json=features)
        assert r.status_code == 200
        versions.add(r.json()["model_version"])
    assert len(versions) == 1
    assert versions == {load_model().version}


async def test_records_label_and_input_hash_not_the_inputs(h: Harness) -> None:
    headers = await h.auth("pat", role="user")
    r = await h.client.post("/predict", headers=headers, json=VIRGINICA)
    assert r.status_code == 200
    e = await h.last_event()
    assert (e.action, e.module, e.outcome, e.status_code, e.actor_name) == (
        "prediction.created",
        "prediction",
        "success",
        200,
        "pat",
    )
    assert e.request_id == r.headers["x-request-id"]
    assert e.event_metadata["label"] == "virginica" == r.json()["label"]
    digest = e.event_metadata["input_sha256"]
    assert isinstance(digest, str) and len(digest) == 64
    int(digest, 16)
    expected = hashlib.sha256(json.dumps([VIRGINICA[f] for f in FEATURES]).encode()).hexdigest()
    assert digest == expected
    # The raw measurements are nowhere in the event.
    stored = json.dumps(e.event_metadata) + (e.description or "") + (e.target_id or "")
    for name, value in VIRGINICA.items():
        assert name not in e.event_metadata
        assert str(value) not in stored
    # Same input, same hash; a different input, a different one.
    await h.client.post("/predict", headers=headers, json=VIRGINICA)
    assert (await h.last_event()).event_metadata["input_sha256"] == digest
    await h.client.post("/predict", headers=headers, json=SETOSA)
    assert (await h.last_event()).event_metadata["input_sha256"] != digest


async def test_integers_are_accepted(h: Harness) -> None:
    headers = await h.auth()
    r = await h.client.post(
        "/predict",
        headers=headers,
        json={"sepal_length": 7, "sepal_width": 3, "petal_length": 6, "petal_width": 2},
    )
    assert r.status_code == 200 and r.json()["label"] == "virginica"


async def test_boundary_30_is_accepted(h: Harness) -> None:
    headers = await h.auth()
    r = await h.client.post("/predict", headers=headers, json={**SETOSA, "sepal_length": 30})
    assert r.status_code == 200, r.text


def _with(field: str, value: Any) -> dict[str, Any]:
    return {**SETOSA, field: value}


BAD_BODIES: list[tuple[str, Any, str]] = [
    ("zero", _with("sepal_length", 0), "sepal_length"),
    ("negative", _with("sepal_width", -1.5), "sepal_width"),
    ("over 30", _with("petal_length", 30.01), "petal_length"),
    ("huge", _with("petal_width", 1e308), "petal_width"),
    ("NaN string", _with("petal_width", "NaN"), "petal_width"),
    ("inf string", _with("sepal_length", "inf"), "sepal_length"),
    ("-Infinity string", _with("sepal_length", "-Infinity"), "sepal_length"),
    ("a string", _with("sepal_width", "wide"), "sepal_width"),
    ("null", _with("petal_length", None), "petal_length"),
    ("a list", _with("petal_length", [1.0]), "petal_length"),
    ("an object", _with("petal_length", {"cm": 1.0}), "petal_length"),
    ("missing field", {k: v for k, v in SETOSA.items() if k != "petal_width"}, "petal_width"),
    ("extra field", {**SETOSA, "species": "setosa"}, "species"),
]


@pytest.mark.parametrize(
    ("body", "field"), [c[1:] for c in BAD_BODIES], ids=[c[0] for c in BAD_BODIES]
)
async def test_bad_bodies_are_422_naming_the_field(h: Harness, body: Any, field: str) -> None:
    headers = await h.auth()
    r = await h.client.post("/predict", headers=headers, json=body)
    out = problem(r, 422)
    assert ["body", field] in [e["loc"][:2] for e in out["errors"]], out
    assert "label" not in out
    e = await h.last_event()
    assert (e.action, e.outcome, e.status_code) == ("prediction.created", "failure", 422)
    assert "label" not in e.event_metadata


@pytest.mark.parametrize(
    "raw",
    [
        b'{"sepal_length": NaN, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}',
        b'{"sepal_length": Infinity, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}',
    ],
    ids=["bare NaN", "bare Infinity"],
)
async def test_non_standard_json_numbers_are_422(h: Harness, raw: bytes) -> None:
    headers = await h.auth()
    r = await h.client.post(
        "/predict", headers={**headers, "Content-Type": "application/json"}, content=raw
    )
    problem(r, 422)


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        (b"[5.1, 3.5, 1.4, 0.2]", ["body"]),
        (b'[{"sepal_length": 5.1}]', ["body"]),
        (b'"setosa"', ["body"]),
        (b"5.1", ["body"]),
        (b"", ["body"]),
        (b'{"sepal_length": 5.1,', ["body"]),
        (b"{'sepal_length': 5.1}", ["body"]),
        (b"\xff\xfe not utf-8", ["body"]),
    ],
    ids=[
        "array",
        "array of object",
        "string",
        "number",
        "empty",
        "truncated",
        "single quotes",
        "not utf-8",
    ],
)
async def test_wrong_shape_or_malformed_json_is_422(h: Harness, raw: bytes, loc: list[str]) -> None:
    headers = await h.auth()
    r = await h.client.post(
        "/predict", headers={**headers, "Content-Type": "application/json"}, content=raw
    )
    out = problem(r, 422)
    assert out["errors"] and all(e["loc"][: len(loc)] == loc for e in out["errors"])
    assert (await h.last_event()).status_code == 422


# --- the per-user limit ----------------------------------------------------------------------


@pytest.fixture
async def limited(db_url: str) -> AsyncIterator[Harness]:
    async for harness in start_harness(make_settings(db_url, predict_rate_limit="3/hour")):
        yield harness


async def test_fourth_prediction_in_an_hour_is_429(limited: Harness) -> None:
    h = limited
    pat = await h.auth("pat", role="user")
    for _ in range(3):
        assert (await h.client.post("/predict", headers=pat, json=SETOSA)).status_code == 200
    r = await h.client.post("/predict", headers=pat, json=SETOSA)
    body = problem(r, 429)
    assert "label" not in body
    retry_after = int(r.headers["retry-after"])
    assert 1 <= retry_after <= 3600
    e = await h.last_event()
    assert (e.action, e.module, e.outcome, e.status_code, e.actor_name) == (
        "prediction.created",
        "prediction",
        "denied",
        429,
        "pat",
    )
    assert e.request_id == r.headers["x-request-id"]
    # Another user has their own allowance.
    quinn = await h.auth("quinn", role="user")
    other = await h.client.post("/predict", headers=quinn, json=VERSICOLOR)
    assert other.status_code == 200 and other.json()["label"] == "versicolor"
    # And the first user stays limited.
    assert (await h.client.post("/predict", headers=pat, json=SETOSA)).status_code == 429
    outcomes = [(x.actor_name, x.outcome) for x in await h.events(action="prediction.created")]
    assert outcomes == [("pat", "success")] * 3 + [
        ("pat", "denied"),
        ("quinn", "success"),
        ("pat", "denied"),
    ]


async def test_anonymous_calls_do_not_spend_a_users_allowance(limited: Harness) -> None:
    """Anonymous calls never reach the per-user counter: a stranger cannot exhaust it."""
    h = limited
    for _ in range(5):
        assert (await h.client.post("/predict", json=SETOSA)).status_code == 401
    pat = await h.auth("pat", role="user")
    assert (await h.client.post("/predict", headers=pat, json=SETOSA)).status_code == 200


# --- the model itself ------------------------------------------------------------------------


def test_model_classifies_the_shipped_iris_data() -> None:
    model = load_model()
    raw = resources.files("audit_service.prediction").joinpath("data/iris.csv").read_text()
    rows = list(csv.DictReader(raw.splitlines()))
    assert len(rows) == 150
    correct = 0
    for row in rows:
        label, probabilities = model.predict(tuple(float(row[f]) for f in FEATURES))
        assert math.isclose(sum(probabilities.values()), 1.0, abs_tol=1e-4)
        correct += label == row["species"]
    assert correct / len(rows) >= 0.93, f"accuracy {correct}/{len(rows)}"
    assert set(model.labels) == {"setosa", "versicolor", "virginica"}


def test_model_is_deterministic_and_versioned_by_its_data() -> None:
    a, b = load_model(), load_model()
    assert a.version == b.version and len(a.version) == len("iris-gnb-") + 12
    features = tuple(VERSICOLOR[f] for f in FEATURES)
    assert a.predict(features) == b.predict(features)
