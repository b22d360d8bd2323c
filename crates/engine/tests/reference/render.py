"""Renders the chat-template fixtures the way Hugging Face transformers does, to pin the
expected strings in tests/templates.rs. Needs only jinja2 (`pip install jinja2`):

    python3 crates/engine/tests/reference/render.py > crates/engine/tests/reference/expected.json
"""
import json
import pathlib

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = pathlib.Path(__file__).parent


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # transformers' own filter: no HTML escaping, Python separators
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception

CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"}],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke.\nA short one."},
    ],
    [
        {"role": "system", "content": "  Be kind.  "},
        {"role": "user", "content": "skip this"},
        {"role": "assistant", "content": "  fine  "},
        {"role": "user", "content": "Ünïcödé ✓ \"quotes\""},
    ],
]

out = []
for name in ["smollm2", "custom"]:
    template = env.from_string((HERE / f"{name}.jinja").read_text())
    for i, messages in enumerate(CONVERSATIONS):
        for agp in (True, False):
            text = template.render(messages=messages, add_generation_prompt=agp, bos_token="<s>", eos_token="</s>")
            out.append({"template": name, "conversation": i, "add_generation_prompt": agp, "text": text})
print(json.dumps({"conversations": CONVERSATIONS, "renders": out}, ensure_ascii=False, indent=1))
