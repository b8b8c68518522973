from __future__ import annotations

import hashlib
import json

from audit_service.audit_log.context import RequestAudit
from audit_service.prediction.model import FEATURES, IrisClassifier
from audit_service.prediction.schemas import PredictRequest, PredictResponse


def predict(model: IrisClassifier, audit: RequestAudit, data: PredictRequest) -> PredictResponse:
    features = tuple(getattr(data, name) for name in FEATURES)
    label, probabilities = model.predict(features)
    # A hash, not the inputs: enough to spot repeated queries without keeping what was asked.
    digest = hashlib.sha256(json.dumps(features).encode()).hexdigest()
    audit.describe(
        description=f"Predicted '{label}'",
        target_type="model",
        target_id=model.version,
        label=label,
        input_sha256=digest,
    )
    return PredictResponse(label=label, probabilities=probabilities, model_version=model.version)
