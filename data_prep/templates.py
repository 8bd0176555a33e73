"""Named prompt templates: the text a dataset row's question is put into before it becomes the user message.

A template is plain text with a ``{question}`` placeholder and, for multiple choice, an optional
``{options}`` placeholder (lettered lines ``A. ...``). Substitution is a single literal pass, so LaTeX
braces in templates (``\\boxed{}``) or in questions are never interpreted as format fields.

List them with::

    python -m data_prep templates

Add one with::

    from data_prep.templates import register_template
    register_template("my_tpl", "{question}\\nAnswer briefly.", "short answers")
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PLACEHOLDER = re.compile(r"\{(question|options)\}")
_ANY_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ALLOWED = {"question", "options"}


@dataclass(frozen=True)
class PromptTemplate:
    """A registered template. ``render`` fills it; ``needs_options`` says whether it has ``{options}``."""

    name: str
    text: str
    description: str = ""

    @property
    def needs_options(self) -> bool:
        return "{options}" in self.text

    def render(self, question: str, options: str | None = None) -> str:
        """Fill the template.

        If the row has options but the template has no ``{options}`` placeholder, the options are appended
        to the question (``"<question>\\n\\nOptions:\\n<options>"``) so they are never lost.
        """
        if self.needs_options and options is None:
            raise ValueError(f"template {self.name!r} needs {{options}}, but this row has no options")
        if options is not None and not self.needs_options:
            question = f"{question}\n\nOptions:\n{options}"
        values = {"question": question, "options": options or ""}
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.text)


TEMPLATES: dict[str, PromptTemplate] = {}


def register_template(name: str, text: str, description: str = "") -> PromptTemplate:
    """Register a template under ``name``; it must contain ``{question}`` and no other field but ``{options}``."""
    if name in TEMPLATES:
        raise ValueError(f"prompt template {name!r} is already registered")
    if "{question}" not in text:
        raise ValueError(f"prompt template {name!r} has no {{question}} placeholder")
    unknown = sorted(set(_ANY_FIELD.findall(text)) - _ALLOWED)
    if unknown:
        raise ValueError(f"prompt template {name!r} has unknown placeholders {unknown}; allowed: {sorted(_ALLOWED)}")
    template = PromptTemplate(name, text, description)
    TEMPLATES[name] = template
    return template


def get_template(name: str) -> PromptTemplate:
    """Look a template up by name; an unknown name is a ValueError that lists the known ones."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown prompt template {name!r}; known templates: {', '.join(sorted(TEMPLATES))}") from None


QWEN_BOXED = register_template(
    "qwen_boxed",
    "{question}\nPlease reason step by step, and put your final answer within \\boxed{}.",
    "SimpleRL-Zoo / Qwen2.5-Math evaluation style: question, then the step-by-step \\boxed{} instruction",
)
PLAIN = register_template("plain", "{question}", "the question only")
MMLU_PRO_BOXED = register_template(
    "mmlu_pro_boxed",
    "{question}\n\nOptions:\n{options}\n\n"
    "Please reason step by step, and put the letter of your final answer (for example A) within \\boxed{}.",
    "multiple choice: question, lettered options, reason step by step, boxed answer letter",
)
