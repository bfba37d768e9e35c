"""Chat prompt formatting from the Jinja template stored in a GGUF file (``tokenizer.chat_template``).

Templates come from model files, i.e. from strangers, so they run in Jinja's
ImmutableSandboxedEnvironment: no attribute access to Python internals, no mutation of the
messages passed in. The environment matches the one Hugging Face transformers renders chat
templates with (trim_blocks, lstrip_blocks, loop controls, ``raise_exception()``, a ``tojson``
that keeps non-ASCII, ``strftime_now()``), so the same template gives the same prompt.

Fallback: a file without ``tokenizer.chat_template`` gets ChatML
(``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, then ``<|im_start|>assistant\\n``
when a generation prompt is asked for), which is what llama.cpp also falls back to. Whether the
model understands ChatML is another matter: ``ChatTemplate.is_fallback`` says when it was used.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Mapping, Sequence

__all__ = ["ChatTemplate", "ChatTemplateError", "CHATML_TEMPLATE", "render_chat", "encode_chat"]

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class ChatTemplateError(ValueError):
    """The chat template could not be compiled or rendered, or it raised an error itself."""


class _TemplateRaised(Exception):
    """raise_exception() called by the template; carried through Jinja unchanged."""


def _raise_exception(message: str = "error raised by the chat template"):
    raise _TemplateRaised(str(message))


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _environment():
    try:
        import jinja2
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError as e:  # pragma: no cover - jinja2 is a declared dependency
        raise ChatTemplateError("chat templates need the jinja2 package (pip install jinja2)") from e
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols],
                                        undefined=jinja2.Undefined)
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def _check_messages(messages) -> list:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise TypeError(f"messages must be a list of {{'role': ..., 'content': ...}} dicts, "
                        f"got {type(messages).__name__}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise TypeError(f"messages[{i}] must be a dict, got {type(m).__name__}")
        if "role" not in m:
            raise ValueError(f"messages[{i}] has no 'role'")
        if not isinstance(m["role"], str):
            raise TypeError(f"messages[{i}]['role'] must be a str, got {type(m['role']).__name__}")
        out.append(dict(m))
    return out


class ChatTemplate:
    """A compiled chat template. ``render(messages)`` gives the prompt text."""

    def __init__(self, source: str | None = None, *, bos_token: str = "", eos_token: str = ""):
        self.is_fallback = source is None or source == ""
        self.source = CHATML_TEMPLATE if self.is_fallback else source
        if not isinstance(self.source, str):
            raise TypeError(f"chat template must be a str, got {type(self.source).__name__}")
        self.bos_token = bos_token
        self.eos_token = eos_token
        env = _environment()
        import jinja2

        try:
            self._template = env.from_string(self.source)
        except jinja2.TemplateSyntaxError as e:
            raise ChatTemplateError(f"chat template does not compile: {e.message} (line {e.lineno})") from e
        except jinja2.TemplateError as e:
            raise ChatTemplateError(f"chat template does not compile: {e}") from e

    @classmethod
    def from_gguf_metadata(cls, meta: Mapping, tokenizer=None) -> "ChatTemplate":
        """The file's template (ChatML when it has none), with bos/eos token texts from its vocabulary."""
        source = meta.get("tokenizer.chat_template")
        if tokenizer is None:
            from .tokenizer import Tokenizer

            tokenizer = Tokenizer.from_gguf_metadata(meta)
        return cls.from_tokenizer(tokenizer, source)

    @classmethod
    def from_tokenizer(cls, tokenizer, source: str | None = None) -> "ChatTemplate":
        if source is None:
            source = getattr(tokenizer, "chat_template", None)
        bos = tokenizer.token_text(tokenizer.bos_id) if tokenizer.bos_id is not None else ""
        eos = tokenizer.token_text(tokenizer.eos_id) if tokenizer.eos_id is not None else ""
        return cls(source, bos_token=bos, eos_token=eos)

    def render(self, messages, add_generation_prompt: bool = True, **extra: Any) -> str:
        """Prompt text for messages ([{'role': 'user', 'content': '...'}, ...]).

        extra: further template variables (tools, documents, ...); bos_token/eos_token may be overridden.
        """
        msgs = _check_messages(messages)
        ctx = {"bos_token": self.bos_token, "eos_token": self.eos_token}
        ctx.update(extra)
        ctx["messages"] = msgs
        ctx["add_generation_prompt"] = bool(add_generation_prompt)
        import jinja2

        try:
            return self._template.render(**ctx)
        except _TemplateRaised as e:
            raise ChatTemplateError(f"chat template raised an error: {e}") from None
        except jinja2.exceptions.SecurityError as e:
            raise ChatTemplateError(f"chat template tried an unsafe operation: {e}") from e
        except (jinja2.TemplateError, TypeError, ValueError, KeyError, AttributeError, IndexError,
                ZeroDivisionError, OverflowError) as e:
            raise ChatTemplateError(f"chat template failed to render: {type(e).__name__}: {e}") from e


def render_chat(meta: Mapping, messages, add_generation_prompt: bool = True, **extra) -> str:
    """One-shot: render the chat template of a GGUF file's metadata."""
    return ChatTemplate.from_gguf_metadata(meta).render(messages, add_generation_prompt, **extra)


def encode_chat(tokenizer, template: ChatTemplate, messages, add_generation_prompt: bool = True,
                **extra) -> list:
    """Token ids of a rendered chat prompt.

    Special tokens written by the template (<|im_start|>...) are parsed as tokens. BOS is added when
    the vocabulary asks for it, unless the template already wrote it (no double BOS).
    """
    text = template.render(messages, add_generation_prompt, **extra)
    ids = tokenizer.encode(text, add_special=True, parse_special=True)
    bos = tokenizer.bos_id
    if tokenizer.add_bos and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
        ids = ids[1:]
    return ids
