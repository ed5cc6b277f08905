"""The request body of ``POST /v1/chat/completions`` (the OpenAI chat format, audio parts included).

Fields are strictly typed (``"0.5"`` is not a number); unknown fields are rejected so that a
misspelt option is an error, not silently ignored. Responses are plain dicts (see ``api.py``).
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

AUDIO_FORMATS = ("wav", "mp3", "flac", "ogg")
#: The deepest JSON nesting a request may have (a chat request needs 6 levels).
MAX_JSON_DEPTH = 32
#: The most JSON values (objects, arrays, strings, numbers) a request may hold: a chat request holds tens
#: (its audio is one string); the bound keeps the check below cheap whatever the body.
MAX_JSON_VALUES = 100_000
#: Seeds torch accepts (``torch.manual_seed``): a signed or unsigned 64-bit integer.
SEED_RANGE = (-(2**63), 2**64 - 1)


def _has_surrogate(text: str) -> bool:
    """A lone surrogate is the one code point UTF-8 cannot encode (both tests run at C speed)."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def json_problem(obj) -> tuple[str, str | None] | None:
    """``(message, param)`` for a parsed body nested deeper than :data:`MAX_JSON_DEPTH`, holding more than
    :data:`MAX_JSON_VALUES` values, or a string (or key) with an unpaired UTF-16 surrogate (``"\\ud800"``:
    valid JSON, not valid text); else None. Walks the body with an explicit stack (no recursion)."""
    stack, counted = [(obj, "", 0)], 1
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            if _has_surrogate(value):
                where = path or "body"
                return f"{where}: contains an unpaired UTF-16 surrogate (such as \\ud800); text must be valid " \
                       "Unicode", where
            continue
        if not isinstance(value, (dict, list)):
            continue
        if depth >= MAX_JSON_DEPTH:
            return f"body: JSON nested deeper than {MAX_JSON_DEPTH} levels", None
        counted += len(value)
        if counted > MAX_JSON_VALUES:
            return f"body: more than {MAX_JSON_VALUES:,} JSON values", None
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str) and _has_surrogate(key):
                return f"{path or 'body'}: a key contains an unpaired UTF-16 surrogate; text must be valid Unicode", \
                    path or None
            child = f"{path}[{key}]" if isinstance(value, list) else (f"{path}.{key}" if path else str(key))
            stack.append((item, child, depth + 1))
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class InputAudio(_Strict):
    data: str  # base64 of the encoded file
    format: Literal["wav", "mp3", "flac", "ogg"]


class AudioPart(_Strict):
    type: Literal["input_audio"]
    input_audio: InputAudio


class TextPart(_Strict):
    type: Literal["text"]
    text: str


ContentPart = Annotated[Union[TextPart, AudioPart], Field(discriminator="type")]


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[ContentPart], None] = None
    name: str | None = None


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatCompletionRequest(_Strict):
    model: str
    messages: list[Message] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=1)  # extension (the reference samples with top_k=300)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    seed: int | None = Field(default=None, ge=SEED_RANGE[0], le=SEED_RANGE[1])  # what torch.manual_seed takes
    n: int = 1
    stop: Union[str, list[str], None] = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # Accepted only at their neutral values (checked in api.py): the model has no such controls.
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: bool | None = None
