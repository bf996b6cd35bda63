"""ChatTemplate renders real templates as the model's own environment does."""

from __future__ import annotations

import datetime
import json

import pytest
from llama_cpp import llama_chat_format

from threadloom.errors import ConfigError
from threadloom.types import ChatMessage, GenerationRequest
from threadloom.workers.chat_template import ChatTemplate, TemplateRefused
from threadloom.workers.openai.protocol import build_call

CHAT = (
    ChatMessage(role="user", content="What is 2 + 2?"),
    ChatMessage(role="assistant", content="4."),
    ChatMessage(role="user", content="And <b>3 & 'x'</b>?"),
)


SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""The bundled SmolLM2-135M-Instruct's template, as its GGUF metadata holds it."""


@pytest.fixture(scope="module")
def bundled() -> ChatTemplate:
    """The bundled model's template (test data; a slow test checks it against the GGUF)."""
    return ChatTemplate(template=SMOLLM2_TEMPLATE, bos_token="<|im_start|>", eos_token="<|im_end|>")


def installed_templates() -> dict[str, str]:
    """Model templates that ship inside llama-cpp-python (ChatML, Mistral, Llama 3)."""
    return {
        "chatml": llama_chat_format.CHATML_CHAT_TEMPLATE,
        "mistral": llama_chat_format.MISTRAL_INSTRUCT_CHAT_TEMPLATE,
        "llama3": llama_chat_format.LLAMA3_INSTRUCT_CHAT_TEMPLATE,
    }


def reference(template: ChatTemplate, messages: tuple[ChatMessage, ...]) -> str:
    """The prompt llama_cpp.server's own formatter renders for the same template."""
    formatter = llama_chat_format.Jinja2ChatFormatter(
        template=template.template, eos_token=template.eos_token, bos_token=template.bos_token
    )
    return formatter(messages=[m.model_dump() for m in messages]).prompt  # type: ignore[misc]


def test_the_bundled_template_renders_as_llama_cpp_server_does(bundled: ChatTemplate) -> None:
    prompt = bundled.render(CHAT)
    assert prompt == reference(bundled, CHAT)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>user\nAnd <b>3 & 'x'</b>?<|im_end|>" in prompt
    # the template adds a default system prompt when the chat has none
    assert prompt.startswith("<|im_start|>system\n")


@pytest.mark.parametrize("name", sorted(installed_templates()))
def test_installed_model_templates_render_as_llama_cpp_server_does(name: str) -> None:
    template = ChatTemplate(template=installed_templates()[name], bos_token="<s>", eos_token="</s>")
    prompt = template.render(CHAT)
    assert prompt == reference(template, CHAT)
    assert "What is 2 + 2?" in prompt and "And <b>3 & 'x'</b>?" in prompt


def test_a_template_that_refuses_the_roles_raises_a_config_error() -> None:
    template = ChatTemplate(template=installed_templates()["mistral"], bos_token="<s>")
    system_first = (ChatMessage(role="system", content="Be brief."), *CHAT)
    with pytest.raises(TemplateRefused, match="roles must alternate"):
        template.render(system_first)
    assert issubclass(TemplateRefused, ConfigError)


def test_tojson_writes_json_as_it_is() -> None:
    template = ChatTemplate(
        template="{{ messages | tojson }}|{{ {'b': 1, 'a': [1, 2]} | tojson(indent=2) }}"
    )
    first, second = template.render(CHAT[2:]).split("|")
    assert "<b>3 & 'x'</b>" in first  # plain Jinja would write \u003cb\u003e and &#39;
    assert json.loads(first) == [{"role": "user", "content": "And <b>3 & 'x'</b>?"}]
    assert second == json.dumps({"b": 1, "a": [1, 2]}, indent=2)


def test_strftime_now_gives_todays_date() -> None:
    before = datetime.date.today().isoformat()
    rendered = ChatTemplate(template="Today is {{ strftime_now('%Y-%m-%d') }}.").render(())
    after = datetime.date.today().isoformat()
    assert rendered in (f"Today is {before}.", f"Today is {after}.")


def test_loop_controls_and_generation_blocks() -> None:
    source = (
        "{% for m in messages %}"
        "{% if m.role == 'assistant' %}{% continue %}{% endif %}"
        "[{{ m.content }}]"
        "{% if loop.index >= 3 %}{% break %}{% endif %}"
        "{% endfor %}"
        "{% generation %}<reply>{% endgeneration %}"
    )
    extra = ChatMessage(role="user", content="never shown")
    rendered = ChatTemplate(template=source).render((*CHAT, extra))
    assert rendered == "[What is 2 + 2?][And <b>3 & 'x'</b>?]<reply>"


def test_the_template_cannot_reach_python_internals() -> None:
    template = ChatTemplate(template="{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(ConfigError, match="chat template failed"):
        template.render(CHAT)


def test_a_broken_template_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="does not parse"):
        ChatTemplate(template="{% for m in messages %}").render(CHAT)


def test_the_openai_worker_renders_chats_with_it(bundled: ChatTemplate) -> None:
    request = GenerationRequest(messages=CHAT, prefix="The answer is")
    call = build_call(request, endpoint="chat", model="m", template=bundled)
    assert call.path == "/completions"
    assert call.body["prompt"] == bundled.render(CHAT) + "The answer is"


@pytest.mark.slow
def test_the_test_data_is_the_bundled_models_template(bundled: ChatTemplate) -> None:
    assert ChatTemplate.from_gguf().model_dump() == bundled.model_dump()


@pytest.mark.slow
def test_the_llama_cpp_worker_renders_chats_with_it(
    llama_worker: object, bundled: ChatTemplate
) -> None:
    request = GenerationRequest(messages=CHAT, prefix="The answer is")
    assert llama_worker.render(request) == bundled.render(CHAT) + "The answer is"  # type: ignore[attr-defined]
