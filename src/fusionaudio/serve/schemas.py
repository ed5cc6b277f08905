"""The request body of ``POST /v1/chat/completions`` (the OpenAI chat format, audio parts included).

Fields are strictly typed (``"0.5"`` is not a number); unknown fields are rejected so that a
misspelt option is an error, not silently ignored. Responses are plain dicts (see ``api.py``).
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

AUDIO_FORMATS = ("wav", "mp3", "flac", "ogg")


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
    seed: int | None = None
    n: int = 1
    stop: Union[str, list[str], None] = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # Accepted only at their neutral values (checked in api.py): the model has no such controls.
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: bool | None = None
