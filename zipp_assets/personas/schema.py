"""The persona: what a user's evidence is turned into (pydantic, exported as JSON schema).

`unknown` is always a valid answer: a persona says what the evidence supports and no more. The
visual-interest categories are the paper's ten.

The JSON schema sent to a model (`persona_json_schema`) is in the subset strict structured outputs
accept (OpenAI's `strict: true`): every property required, no other property allowed, no defaults
and no string-length keywords (item counts and number ranges stay). So `{}` or a persona missing a field is invalid output, not a
persona of defaults; the length and range limits are checked here, by the pydantic model.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = "persona-v3"  # v2: every field required (strict structured outputs); v3: words of at most 40 characters
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
# A word or short phrase. Bounded so that a whole persona fits its token budget: with unbounded list items
# SmolLM2-135M wrote ever longer phrases until max_tokens cut 7 of 8 personas.
Word = Annotated[str, Field(max_length=40)]
Words = list[Word]


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


def closed_json_schema(schema: dict) -> dict:
    """`schema` closed the way strict structured outputs need it: each object lists all its properties as
    required and allows no others; defaults are dropped (a required field has none). Length and item
    limits stay: vLLM's guided decoding enforces them, and the `openai` client leaves out the ones
    OpenAI's strict mode refuses (`llm.openai_compat.strict_subset`). A copy; `schema` is not changed."""
    if isinstance(schema, list):
        return [closed_json_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "default":
            continue
        if key in ("properties", "$defs"):
            out[key] = {name: closed_json_schema(sub) for name, sub in value.items()}
        else:
            out[key] = closed_json_schema(value)
    if out.get("type") == "object" or "properties" in out:
        out["required"] = list(out.get("properties", {}))
        out["additionalProperties"] = False
    return out


def persona_json_schema() -> dict:
    return closed_json_schema(Persona.model_json_schema())


# Fields a person may edit through the override table, and the ones fidelity scores.
EDITABLE_FIELDS = tuple(Persona.model_fields)
