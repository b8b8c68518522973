from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

# Real iris flowers measure well under 30 cm; anything outside (0, 30] is a typo or an attack.
Centimetres = Annotated[
    float, Field(gt=0, le=30, allow_inf_nan=False, description="centimetres", examples=[5.1])
]


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)

    sepal_length: Centimetres
    sepal_width: Centimetres
    petal_length: Centimetres
    petal_width: Centimetres


class PredictResponse(BaseModel):
    label: str = Field(examples=["setosa"])
    probabilities: dict[str, float] = Field(
        examples=[{"setosa": 0.99, "versicolor": 0.01, "virginica": 0.0}]
    )
    model_version: str
