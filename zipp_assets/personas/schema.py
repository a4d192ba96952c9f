"""The persona: what a user's evidence is turned into (pydantic, exported as JSON schema).

`unknown` is always a valid answer: a persona says what the evidence supports and no more. The
visual-interest categories are the paper's ten.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = "persona-v1"
UNKNOWN = "unknown"
AGE_BANDS = ("13-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+", UNKNOWN)
GENDERS = ("female", "male", "nonbinary", UNKNOWN)
VISUAL_INTERESTS = (
    "architecture and interior design",
    "products, logos and packaging",
    "people, family and lifestyle",
    "nature, wildlife and animals",
    "graphic design and typography",
    "culture and religious aesthetics",
    "cinematic portrait photography",
    "illustration and concept art",
    "sci-fi and robotics",
    "fashion and beauty",
)
Words = list[str]


class Aesthetics(BaseModel):
    model_config = ConfigDict(extra="forbid")

    palette: Words = Field(default_factory=list, max_length=8, description="colour palette words")
    lighting: Words = Field(default_factory=list, max_length=8)
    mood: Words = Field(default_factory=list, max_length=8)
    styles: Words = Field(default_factory=list, max_length=8)


class Persona(BaseModel):
    model_config = ConfigDict(extra="forbid")

    age_band: Literal[AGE_BANDS] = UNKNOWN  # type: ignore[valid-type]
    gender: Literal[GENDERS] = UNKNOWN  # type: ignore[valid-type]
    locale: str = Field(default=UNKNOWN, max_length=80, description="city or country, or unknown")
    profession: str = Field(default=UNKNOWN, max_length=80)
    personality_traits: Words = Field(default_factory=list, max_length=8)
    hobbies: Words = Field(default_factory=list, max_length=10)
    interests: Words = Field(default_factory=list, max_length=12)
    visual_interests: list[Literal[VISUAL_INTERESTS]] = Field(default_factory=list, max_length=3)  # type: ignore[valid-type]
    aesthetics: Aesthetics = Field(default_factory=Aesthetics)
    affective_traits: Words = Field(default_factory=list, max_length=8)
    summary: str = Field(default="", max_length=600, description="a short first-person summary ('I ...')")
    confidence: float = Field(default=0.0, ge=0.0, le=1.0)


def persona_json_schema() -> dict:
    return Persona.model_json_schema()


# Fields a person may edit through the override table, and the ones fidelity scores.
EDITABLE_FIELDS = tuple(Persona.model_fields)
