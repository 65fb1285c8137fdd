"""Request and response bodies, split by role (what clients send, what they get back)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Modality = Literal["image", "audio", "text"]
Dims = Literal[64, 128, 256, 512]
SearchMode = Literal["exact", "adaptive"]

ITEM_ID = Field(None, min_length=1, max_length=256, description="Your id; generated when absent.")
METADATA = Field(None, description="Any JSON object, returned with the item and in search hits.")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Requests ---------------------------------------------------------------------------


class TextIn(_Strict):
    """A text input as JSON."""

    text: str = Field(description="The text to embed.")


class TextsIn(_Strict):
    """Several text inputs as JSON."""

    texts: list[str] = Field(min_length=1, description="Texts to embed, answered in order.")


class ItemIn(_Strict):
    """An item to store: `text`, or a file as `content_base64`, or both (the file, with
    `text` as its caption or title, stored but not embedded)."""

    text: str | None = Field(
        None, description="Text content; beside `content_base64`, the file's caption."
    )
    content_base64: str | None = Field(
        None, description="An image or audio file, base64-encoded (modality detected from bytes)."
    )
    id: str | None = ITEM_ID
    metadata: dict[str, Any] | None = METADATA

    @model_validator(mode="after")
    def _one_content(self) -> ItemIn:
        if self.text is None and self.content_base64 is None:
            raise ValueError("give 'text', 'content_base64', or both (a file and its caption)")
        return self


class ItemsIn(_Strict):
    """Several items to store in one call; all are stored or none."""

    items: list[ItemIn] = Field(min_length=1)


class OpenAIEmbeddingsIn(BaseModel):
    """The OpenAI embeddings request (`POST /v1/embeddings`)."""

    model_config = ConfigDict(extra="ignore")

    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="A string or a list of strings (token arrays are not supported)."
    )
    model: str = Field(description="Any name; echoed back (this server has one model).")
    dimensions: int | None = Field(
        None, description="Matryoshka truncation: 64, 128, 256 or 512 (default 512)."
    )
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="'base64': little-endian float32 bytes, base64-encoded."
    )
    user: str | None = None


# Responses --------------------------------------------------------------------------


class ArrayOut(BaseModel):
    shape: list[int] = Field(description="The array's shape, e.g. [16, 256] for latents.")
    data: list[float] | str = Field(
        description="Row-major floats, or with `encoding_format=base64` their little-endian "
        "float32 bytes in base64."
    )


class EmbedOut(BaseModel):
    modality: Modality
    dims: int
    embedding: list[float] | str | None = Field(
        None,
        description="Unit-length vector of `dims` floats (base64 of little-endian float32 with "
        "`encoding_format=base64`); left out when `output` does not ask for it.",
    )
    latents: ArrayOut | None = Field(
        None, description="The resampler's latents (`output=latents`): shape [L, D]."
    )
    llm_prefix: ArrayOut | None = Field(
        None,
        description="The latents projected into the language model's input space "
        "(`output=llm_prefix`): shape [L, D_llm].",
    )
    transcript: str | None = Field(
        None,
        description="What a clip was heard to say, the words its vector holds "
        '(`output=transcript`; "" when no speech was heard, null for text and images).',
    )


class EmbedRow(EmbedOut):
    index: int = Field(description="Position of the input in the request.")


class DescribeOut(BaseModel):
    text: str = Field(
        description="What the language model wrote (greedy: the same input gives the same text)."
    )
    modality: Modality
    model: str = Field(description="The language model that wrote it.")
    tokens: int = Field(description="Tokens generated.")
    seconds: float = Field(description="Time spent generating.")


class EmbedBatchOut(BaseModel):
    dims: int
    data: list[EmbedRow]


class SearchHitOut(BaseModel):
    id: str
    score: float = Field(description="Cosine similarity at the dims that ranked it.")
    modality: Modality | str
    text: str | None = Field(
        None,
        description="The item's stored text (a text's text, a file's caption); null when it "
        "has none. Left out unless `include` names `text`.",
    )
    metadata: dict[str, Any] | None = Field(
        None, description="The item's metadata. Left out unless `include` names `metadata`."
    )


class SearchOut(BaseModel):
    query_modality: Modality
    dims: int
    mode: SearchMode
    k: int
    results: list[SearchHitOut]


class ItemCreated(BaseModel):
    id: str
    modality: Modality


class ItemsCreated(BaseModel):
    items: list[ItemCreated]


class ItemOut(BaseModel):
    id: str
    modality: Modality | str
    text: str | None = Field(
        None, description="The stored text (a text's text, a file's caption), or null."
    )
    metadata: dict[str, Any]
    created_at: float = Field(description="Unix seconds, UTC.")
    updated_at: float = Field(description="Unix seconds, UTC.")
    embedding: list[float] | None = Field(
        None, description="The stored vector at `dims`, with `include_embedding=true`."
    )


class ItemListOut(BaseModel):
    total: int = Field(description="Items matching the modality filter.")
    items: list[ItemOut]


class DeletedOut(BaseModel):
    id: str
    deleted: bool = True


class OpenAIEmbedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class OpenAIUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class OpenAIEmbeddingsOut(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIEmbedding]
    model: str
    usage: OpenAIUsage


class OpenAIModel(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "mmembed"


class OpenAIModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIModel]


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"


class DescribeInfo(BaseModel):
    available: bool
    model: str | None = None
    reason: str | None = Field(None, description="Why /describe is off, when it is.")


class EarlierModel(BaseModel):
    name: str | None = Field(
        None, description="The earlier release, e.g. `image-audio-text-v5 5.0.0`."
    )
    fingerprint: str = Field(description="Its weights digest, as an index it filled records.")
    modalities: list[str] = Field(description="The modalities whose stored vectors this holds for.")
    turned_by: str | None = Field(
        None, description="The shipped release whose prefix rotation its vectors carry."
    )


class Upgrades(BaseModel):
    takes_over: list[EarlierModel] = Field(
        default_factory=list,
        description="Models whose vectors of these modalities are this model's, bit for bit: "
        "an index they filled with no item of another modality opens as it is.",
    )
    turns: list[EarlierModel] = Field(
        default_factory=list,
        description="Models whose stored vectors of these modalities `mmembed index reembed` "
        "turns into this model's exactly, needing no media; it embeds their other items again.",
    )


class ReadyOut(BaseModel):
    status: Literal["ready"] = "ready"
    model: str | None = Field(None, description="The shipped release served, if one is.")
    version: str | None = Field(None, description="That release's version.")
    preset: str | None
    checkpoint: str | None
    trained: bool
    demo: bool
    weights_digest: str = Field(
        description="sha256 of the weights that decide the vector space (adapters, resampler, "
        "heads): replicas with the same digest make comparable vectors, and an index refuses "
        "a model with another digest once it holds vectors."
    )
    warning: str | None = Field(None, description="Why the embeddings may not be meaningful.")
    modalities: list[Modality]
    encoders: dict[str, str]
    device: str
    dtype: str
    encoder_runtime: dict[str, str] = Field(
        default_factory=dict,
        description='How each encoder runs: "torch", "onnx" (ONNX Runtime) or "onnx-int8" '
        "(ONNX Runtime, dynamic int8).",
    )
    dims: list[int]
    audio_window: str | None = Field(
        None,
        description='How audio is run through Whisper: "full" (padded 30 s windows) or '
        '"trimmed" (each window cut to its clip); the one the checkpoint was trained with.',
    )
    text_tower: str | None = Field(
        None,
        description='How text is embedded: "trained" (its adapter and the shared resampler) or '
        '"locked" (the text encoder\'s own sentence embedding on its principal axes, so '
        "text-to-text search ranks as that encoder does).",
    )
    blend: dict[str, Any] | None = Field(
        None,
        description="For a blend of a trained and a locked-text branch (the release): "
        "`locked_dims`, the [start, end) of the dims the locked branch fills, and the share of "
        "a vector's weight there for text (`text_weight`) and other media (`media_weight`).",
    )
    transcript: dict[str, Any] | None = Field(
        None,
        description="For a model that mixes Whisper's transcript of each clip into its vector "
        "(the release): where the `decoder` came from, the transcript's weight in the "
        "two-sided (`main_weight`) and locked (`locked_weight`) parts, the "
        "`no_speech_threshold` above which a clip gets no transcript, and how much further "
        "the first `prefix_dims` dims turn towards it (`prefix_weight`; 0: no further).",
    )
    describe: DescribeInfo = Field(
        default_factory=lambda: DescribeInfo(available=False),
        description="Whether /describe is on, with which language model, or why not.",
    )
    upgrades: Upgrades = Field(
        default_factory=lambda: Upgrades(),
        description="Which earlier models' indexes this one takes over or moves without media.",
    )
    index: dict[str, Any]


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorDetail


# OpenAPI descriptions for routes that parse multipart and JSON bodies by hand --------


def _inline(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(ref_template="#/components/schemas/{model}")


def request_body(
    *,
    json_model: type[BaseModel] | None,
    form_fields: dict[str, dict[str, Any]] | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    """An `openapi_extra` request body: JSON (`json_model`) and/or multipart/form-data
    (`form_fields`)."""
    content: dict[str, Any] = {}
    if form_fields is not None:
        content["multipart/form-data"] = {"schema": {"type": "object", "properties": form_fields}}
    if json_model is not None:
        content["application/json"] = {"schema": _inline(json_model)}
    body: dict[str, Any] = {"required": True, "content": content}
    if description is not None:
        body["description"] = description
    return {"requestBody": body}


FILE_FIELD = {"type": "string", "format": "binary", "description": "An image or audio file."}
FILES_FIELD = {"type": "array", "items": FILE_FIELD, "description": "Image or audio files."}
TEXT_FIELD = {"type": "string", "description": "Text input."}
TEXTS_FIELD = {"type": "array", "items": {"type": "string"}, "description": "Text inputs."}
ID_FIELD = {"type": "string", "description": "Item id (optional)."}
METADATA_FIELD = {"type": "string", "description": "Metadata: a JSON object, as text."}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text}
    for code, text in {
        400: "Bad input (corrupt file, empty text, bad metadata, ...)",
        401: "Missing or invalid API key",
        413: "File or body over the size limit",
        415: "Unsupported media type",
        422: "Invalid parameters",
        429: "Too many pending requests; see Retry-After",
        503: "Not ready",
        504: "Timed out waiting for the model",
    }.items()
}
