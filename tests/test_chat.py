"""Chat template rendering (sandboxed Jinja) and the ChatML fallback."""
from __future__ import annotations

import os

import pytest

from fastcpu.chat import CHATML_TEMPLATE, ChatTemplate, ChatTemplateError, encode_chat, render_chat
from fastcpu.tokenizer import Tokenizer
from gguf_meta import model_path, read_metadata

SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@pytest.fixture(scope="module")
def smol_meta():
    path = model_path()
    if not os.path.exists(path):
        pytest.skip(f"SmolLM2 GGUF not found at {path} (set FASTCPU_TEST_MODEL)")
    return read_metadata(path)


@pytest.fixture(scope="module")
def smol(smol_meta):
    tok = Tokenizer.from_gguf_metadata(smol_meta)
    return tok, ChatTemplate.from_gguf_metadata(smol_meta, tok)


def test_smollm2_template_default_system(smol):
    _, tpl = smol
    assert not tpl.is_fallback
    msgs = [{"role": "user", "content": "What is 2+2?"}]
    assert tpl.render(msgs) == (
        f"<|im_start|>system\n{SMOL_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n")
    assert tpl.render(msgs, add_generation_prompt=False) == (
        f"<|im_start|>system\n{SMOL_SYSTEM}<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n")


def test_smollm2_template_conversation(smol):
    _, tpl = smol
    msgs = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello! 😀"},
            {"role": "user", "content": "日本語?"}]
    assert tpl.render(msgs) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello! 😀<|im_end|>\n<|im_start|>user\n日本語?<|im_end|>\n"
        "<|im_start|>assistant\n")


def test_smollm2_encode_chat(smol):
    tok, tpl = smol
    msgs = [{"role": "user", "content": "Hi"}]
    ids = encode_chat(tok, tpl, msgs)
    im_start, im_end = tok.token_id("<|im_start|>"), tok.token_id("<|im_end|>")
    assert ids[0] == im_start and ids.count(im_start) == 3 and ids.count(im_end) == 2
    assert tok.decode(ids) == tpl.render(msgs)
    assert ids[-2:] == tok.encode("<|im_start|>assistant\n", add_special=False, parse_special=True)[-2:]


def test_render_chat_one_shot(smol_meta):
    out = render_chat(smol_meta, [{"role": "user", "content": "x"}], add_generation_prompt=False)
    assert out.endswith("<|im_start|>user\nx<|im_end|>\n")


def test_chatml_fallback():
    tpl = ChatTemplate(None)
    assert tpl.is_fallback and tpl.source == CHATML_TEMPLATE
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert tpl.render(msgs) == "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\nb<|im_end|>\n<|im_start|>assistant\n"
    assert tpl.render(msgs, add_generation_prompt=False).endswith("b<|im_end|>\n")


def test_fallback_from_metadata_without_template(smol_meta):
    meta = {k: v for k, v in smol_meta.items() if k != "tokenizer.chat_template"}
    tpl = ChatTemplate.from_gguf_metadata(meta)
    assert tpl.is_fallback


def test_bos_eos_and_helpers():
    src = ("{{ bos_token }}{% for m in messages %}{{ m['role'] | upper }}: {{ m['content'] | tojson }}"
           "{% if loop.last %}{% break %}{% endif %}\n{{ '\\n' }}{% endfor %}{{ eos_token }}")
    tpl = ChatTemplate(src, bos_token="<s>", eos_token="</s>")
    out = tpl.render([{"role": "user", "content": "café \"q\""}, {"role": "bot", "content": "x"}])
    # trim_blocks (as in transformers) eats the newline after a block tag; the explicit one stays
    assert out == '<s>USER: "café \\"q\\""\nBOT: "x"</s>'


def test_raise_exception():
    tpl = ChatTemplate("{% if messages[0]['role'] != 'user' %}{{ raise_exception('first must be user') }}"
                       "{% endif %}ok")
    assert tpl.render([{"role": "user", "content": ""}]) == "ok"
    with pytest.raises(ChatTemplateError, match="first must be user"):
        tpl.render([{"role": "system", "content": ""}])


def test_bad_templates():
    with pytest.raises(ChatTemplateError, match="does not compile"):
        ChatTemplate("{% for m in messages %}{{ m }")
    with pytest.raises(ChatTemplateError, match="failed to render"):
        ChatTemplate("{{ messages[0]['content'] + 1 }}").render([{"role": "user", "content": "x"}])
    # the sandbox: no reaching into Python internals, no mutating the caller's messages
    with pytest.raises(ChatTemplateError, match="unsafe|render"):
        ChatTemplate("{{ messages.__class__.__mro__[1].__subclasses__() }}").render([])
    msgs = [{"role": "user", "content": "x"}]
    with pytest.raises(ChatTemplateError, match="unsafe"):
        ChatTemplate("{% set _ = messages.append({'role': 'x'}) %}").render(msgs)
    assert msgs == [{"role": "user", "content": "x"}]


def test_bad_messages():
    tpl = ChatTemplate(None)
    with pytest.raises(TypeError):
        tpl.render("hello")
    with pytest.raises(TypeError):
        tpl.render(["hello"])
    with pytest.raises(ValueError, match="role"):
        tpl.render([{"content": "x"}])
    with pytest.raises(TypeError):
        ChatTemplate(42)


TEMPLATES = {
    "tojson_tools": ("{% for m in messages %}{{ m.role }}: {{ m.content | tojson }}\n{% endfor %}"
                     "{% if tools %}TOOLS {{ tools | tojson(indent=2) }}{% endif %}"
                     "{% if add_generation_prompt %}assistant:{% endif %}"),
    "loop_controls": ("{{ bos_token }}{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}"
                      "  [{{ loop.index }}] {{ m.content | trim }}\n"
                      "{% endfor %}{{ eos_token }}"),
}


@pytest.mark.oracle
@pytest.mark.parametrize("name", ["smollm2"] + sorted(TEMPLATES))
def test_matches_transformers(request, name):
    hf = pytest.importorskip("transformers.utils.chat_template_utils")
    if name == "smollm2":
        src = request.getfixturevalue("smol_meta")["tokenizer.chat_template"]
    else:
        src = TEMPLATES[name]
    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": "  héllo 😀\n"},
            {"role": "assistant", "content": "hi"}, {"role": "user", "content": "bye"}]
    tools = [{"type": "function", "function": {"name": "f", "description": "café"}}]
    for gen in (True, False):
        for m in (msgs, msgs[1:]):
            ours = ChatTemplate(src, bos_token="<s>", eos_token="</s>").render(m, gen, tools=tools)
            rendered, _ = hf.render_jinja_template([m], tools=tools, chat_template=src, add_generation_prompt=gen,
                                                   bos_token="<s>", eos_token="</s>")
            assert ours == rendered[0]
