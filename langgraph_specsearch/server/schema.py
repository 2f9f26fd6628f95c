"""TGI's request schema, its error shape and request validation (no torch here).

The models follow docs/openapi.json of huggingface/text-generation-inference v3. `prepare`
applies TGI's validation rules (and messages) to a request and returns its `Prepared` form.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

VERSION = "3.3.6-specsearch"

Request = TypeVar("Request", bound=BaseModel)

Tokenize = Callable[[str], tuple[list[int], list[tuple[int, int]]]]
"""Text -> (token ids, character offsets of each token)."""


U32 = 2**32 - 1
U64 = 2**64 - 1
Float = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-3.4e38, le=3.4e38)]
"""A JSON number TGI reads as an f32: finite, no strings or booleans."""
Bool = Annotated[bool, Field(strict=True)]
Str = Annotated[str, Field(strict=True)]


def _integral(value: Any) -> Any:
    """`3.0` -> 3: JSON Schema counts an integral number as an integer (and so does a client)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2.0**64:
        return int(value)
    return value


def _int(high: int) -> Any:
    """A JSON integer up to `high` (TGI's Rust integer types): no fractions, strings, booleans."""
    return Annotated[int, BeforeValidator(_integral), Field(strict=True, le=high)]


class GrammarParam(BaseModel):
    """TGI's `grammar` parameter (accepted by the schema, rejected by validation)."""

    type: Str
    value: Any = None


class GenerateParameters(BaseModel):
    """TGI `GenerateParameters` (unknown fields are ignored, as TGI's serde does).

    Types are as strict as TGI's serde: integers are JSON integers within the Rust type's
    range (`seed` u64, counts u32), floats are finite, booleans are booleans.
    """

    model_config = ConfigDict(extra="ignore")

    adapter_id: Str | None = None
    best_of: _int(U64) | None = None  # type: ignore[valid-type]
    decoder_input_details: Bool = False
    details: Bool = False
    do_sample: Bool = False
    frequency_penalty: Float | None = None
    grammar: GrammarParam | None = None
    max_new_tokens: _int(U32) | None = None  # type: ignore[valid-type]
    repetition_penalty: Float | None = None
    return_full_text: Bool | None = None
    seed: _int(U64) | None = None  # type: ignore[valid-type]
    stop: list[Str] = Field(default_factory=list)
    temperature: Float | None = None
    top_k: _int(2**31 - 1) | None = None  # type: ignore[valid-type]
    top_n_tokens: _int(U32) | None = None  # type: ignore[valid-type]
    top_p: Float | None = None
    truncate: _int(U64) | None = None  # type: ignore[valid-type]
    typical_p: Float | None = None
    watermark: Bool = False


class GenerateRequest(BaseModel):
    """TGI `GenerateRequest` / `CompatGenerateRequest`."""

    model_config = ConfigDict(extra="ignore")

    inputs: Str
    parameters: GenerateParameters = Field(default_factory=GenerateParameters)
    stream: Bool = False


class TokenizeParameters(BaseModel):
    """The parameters `/tokenize` reads (the others are ignored there, as in TGI)."""

    model_config = ConfigDict(extra="ignore")

    truncate: _int(U64) | None = None  # type: ignore[valid-type]


class TokenizeRequest(BaseModel):
    """`/tokenize`'s body: a `GenerateRequest` of which only `inputs` and `truncate` count."""

    model_config = ConfigDict(extra="ignore")

    inputs: Str
    parameters: TokenizeParameters = Field(default_factory=TokenizeParameters)


class TGIError(Exception):
    """An error TGI reports as `{"error": ..., "error_type": ...}` with an HTTP status."""

    def __init__(self, status: int, message: str, error_type: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type

    def body(self) -> dict[str, str]:
        """TGI's `ErrorResponse`."""
        return {"error": self.message, "error_type": self.error_type}


def validation_error(message: str) -> TGIError:
    """TGI's 422 `validation` error."""
    return TGIError(422, message, "validation")


@dataclass
class Limits:
    """Limits a server enforces and reports in `/info`."""

    max_concurrent_requests: int
    max_input_tokens: int
    max_total_tokens: int
    max_best_of: int
    max_stop_sequences: int
    max_top_n_tokens: int
    prefill_logprobs_tokens: int = 1024
    """Longest prompt whose token log-probabilities (`decoder_input_details`) are computed."""


class Prepared(BaseModel):
    """A validated request: its rows' parameters and the prompt tokens."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    request: GenerateRequest
    ids: list[int]
    offsets: list[tuple[int, int]]
    max_new_tokens: int
    do_sample: bool
    temperature: float
    top_p: float
    top_k: int
    best_of: int
    seed: int | None
    top_n: int


def token_json(special_ids: set[int], token: int, text: str, lp: float | None) -> dict[str, Any]:
    """TGI's `Token`."""
    return {"id": token, "text": text, "logprob": lp, "special": token in special_ids}


def prepare(req: GenerateRequest, limits: Limits, tokenize: Tokenize, *, stream: bool) -> Prepared:
    """Validate `req` as TGI does (same checks, same messages) and tokenize its prompt."""
    p = req.parameters
    if p.grammar is not None:
        raise validation_error("Grammar and tools are not supported by this backend")
    if p.adapter_id not in (None, "", "null"):
        raise validation_error(f"LoRA adapter {p.adapter_id!r} is not loaded")
    best_of = 1 if p.best_of is None else p.best_of
    if best_of <= 0 or best_of > limits.max_best_of:
        raise validation_error(
            f"`best_of` must be > 0 and <= {limits.max_best_of}. Given: {best_of}"
        )
    if stream and best_of != 1:
        raise validation_error("`best_of` != 1 is not supported when streaming tokens")
    if stream and p.decoder_input_details:
        raise validation_error(
            "`decoder_input_details` == true is not supported when streaming tokens"
        )
    sampling = (
        p.do_sample
        or p.temperature is not None
        or p.top_k is not None
        or p.top_p is not None
        or p.typical_p is not None
    )
    if best_of > 1 and not sampling:
        raise validation_error("you must use sampling when `best_of` is > 1")
    if best_of > 1 and p.seed is not None:
        raise validation_error("`seed` must not be set when `best_of` > 1")
    if p.temperature is not None and not p.temperature > 0:
        raise validation_error("`temperature` must be strictly positive")
    if p.repetition_penalty is not None and not p.repetition_penalty > 0:
        raise validation_error("`repetition_penalty` must be strictly positive")
    if p.frequency_penalty is not None and not -2.0 <= p.frequency_penalty <= 2.0:
        raise validation_error("`frequency_penalty` must be >= -2.0 and <= 2.0")
    if p.top_p is not None and not 0.0 < p.top_p < 1.0:
        raise validation_error("`top_p` must be > 0.0 and < 1.0")
    if p.typical_p is not None and not 0.0 < p.typical_p < 1.0:
        raise validation_error("`typical_p` must be > 0.0 and < 1.0")
    if p.top_k is not None and p.top_k <= 0:
        raise validation_error("`top_k` must be strictly positive")
    top_n = p.top_n_tokens or 0
    if top_n < 0 or top_n > limits.max_top_n_tokens:
        raise validation_error(
            f"`top_n_tokens` must be >= 0 and <= {limits.max_top_n_tokens}. Given: {top_n}"
        )
    if len(p.stop) > limits.max_stop_sequences:
        raise validation_error(
            f"`stop` supports up to {limits.max_stop_sequences} stop sequences."
            f" Given: {len(p.stop)}"
        )
    if p.seed is not None and p.seed < 0:
        raise validation_error("`seed` must be >= 0")
    if p.max_new_tokens is not None and p.max_new_tokens <= 0:
        raise validation_error("`max_new_tokens` must be strictly positive")
    if not req.inputs:
        raise validation_error("`inputs` cannot be empty")
    ids, offsets = tokenize(req.inputs)
    if p.truncate is not None:
        if p.truncate <= 0 or p.truncate > limits.max_input_tokens:
            raise validation_error(
                "`truncate` must be strictly positive and less than"
                f" {limits.max_input_tokens}. Given: {p.truncate}"
            )
        ids, offsets = ids[-p.truncate :], offsets[-p.truncate :]
    if not ids:
        raise validation_error("`inputs` cannot be empty")
    if len(ids) > limits.max_input_tokens:
        raise validation_error(
            f"`inputs` must have less than {limits.max_input_tokens} tokens. Given: {len(ids)}"
        )
    if p.decoder_input_details and len(ids) > limits.prefill_logprobs_tokens:
        raise validation_error(
            "`decoder_input_details` == true is limited to prompts of at most"
            f" {limits.prefill_logprobs_tokens} tokens (serve --prefill-logprobs-tokens)."
            f" Given: {len(ids)}"
        )
    max_new = (
        p.max_new_tokens if p.max_new_tokens is not None else limits.max_total_tokens - len(ids)
    )
    if len(ids) + max_new > limits.max_total_tokens:
        raise validation_error(
            f"`inputs` tokens + `max_new_tokens` must be <= {limits.max_total_tokens}."
            f" Given: {len(ids)} `inputs` tokens and {max_new} `max_new_tokens`"
        )
    seed = p.seed
    if sampling and seed is None and best_of == 1:
        seed = random.randrange(1, 2**63)
    return Prepared(
        request=req,
        ids=ids,
        offsets=offsets,
        max_new_tokens=max_new,
        do_sample=sampling,
        temperature=p.temperature if p.temperature is not None else 1.0,
        top_p=p.top_p if p.top_p is not None else 1.0,
        top_k=p.top_k or 0,
        best_of=best_of,
        seed=seed,
        top_n=top_n,
    )


def parse_request(body: bytes) -> GenerateRequest:
    """A `/generate` body as TGI's serde reads it; a 422 `validation` error naming the field."""
    return _parse(body, GenerateRequest)


def parse_tokenize(body: bytes) -> TokenizeRequest:
    """A `/tokenize` body (see `TokenizeRequest`)."""
    return _parse(body, TokenizeRequest)


def _parse(body: bytes, model: type[Request]) -> Request:
    """`model` from JSON bytes, or TGI's 422 naming the first bad field."""
    try:
        return model.model_validate_json(body)
    except PydanticValidationError as exc:
        errors = exc.errors(include_url=False)
        if not errors:
            raise validation_error("Failed to deserialize the JSON body") from None
        first = errors[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        message = str(first["msg"])
        if first["type"] == "json_invalid":
            raise validation_error(f"Failed to parse the request body as JSON: {message}") from None
        raise validation_error(f"Failed to deserialize the JSON body: {where}: {message}") from None
