"""/predict."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from audit_service.audit_log.context import audited
from audit_service.audit_log.dependencies import RecorderDep
from audit_service.auth.dependencies import limit_predictions
from audit_service.core.errors import problem_responses
from audit_service.core.routing import SafeJSONRoute
from audit_service.prediction import service
from audit_service.prediction.model import IrisClassifier
from audit_service.prediction.schemas import PredictRequest, PredictResponse

router = APIRouter(tags=["prediction"], route_class=SafeJSONRoute)


def get_model(request: Request) -> IrisClassifier:
    model: IrisClassifier = request.app.state.predictor
    return model


ModelDep = Annotated[IrisClassifier, Depends(get_model)]


@router.post(
    "/predict",
    response_model=PredictResponse,
    operation_id="predict",
    dependencies=[Depends(limit_predictions)],
    responses=problem_responses(401, 422, 429),
    openapi_extra=audited("prediction.created", "prediction"),
)
async def predict(data: PredictRequest, model: ModelDep, audit: RecorderDep) -> PredictResponse:
    """Classify an iris flower from its measurements (50 per hour per user by default)."""
    return service.predict(model, audit, data)
