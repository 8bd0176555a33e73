"""Prompt templates are named, explicit and literal (LaTeX braces are never format fields). Run:
    .venv/bin/python -m pytest tests/test_data_prep_prompt_templates.py -q
"""

from __future__ import annotations

import pytest

from data_prep.templates import TEMPLATES, get_template, register_template


def test_registry_has_the_named_templates():
    assert {"qwen_boxed", "plain", "mmlu_pro_boxed"} <= set(TEMPLATES)


def test_qwen_boxed_is_the_simplerl_zoo_evaluation_instruction():
    text = get_template("qwen_boxed").render("What is $\\frac{1}{2}+\\frac{1}{2}$?")
    assert text == (
        "What is $\\frac{1}{2}+\\frac{1}{2}$?\n"
        "Please reason step by step, and put your final answer within \\boxed{}."
    )


def test_plain_is_the_question_only_and_substitution_is_literal():
    question = "Literal {question} and {options} and \\boxed{x} stay as written."
    assert get_template("plain").render(question) == question


def test_mmlu_template_lists_options_and_other_templates_append_them():
    options = "A. yes\nB. no"
    mmlu = get_template("mmlu_pro_boxed").render("Is it?", options)
    assert mmlu.startswith("Is it?\n\nOptions:\nA. yes\nB. no\n\n") and mmlu.endswith("within \\boxed{}.")
    assert get_template("plain").render("Is it?", options) == "Is it?\n\nOptions:\nA. yes\nB. no"
    with pytest.raises(ValueError, match="needs \\{options\\}"):
        get_template("mmlu_pro_boxed").render("Is it?")


def test_unknown_name_is_a_value_error_naming_it_and_the_known_ones():
    with pytest.raises(ValueError) as caught:
        get_template("qwen-boxed")
    message = str(caught.value)
    assert "'qwen-boxed'" in message and all(name in message for name in TEMPLATES)


def test_registration_validates_placeholders():
    with pytest.raises(ValueError, match="already registered"):
        register_template("plain", "{question}")
    with pytest.raises(ValueError, match="no \\{question\\}"):
        register_template("t_missing", "Solve it.")
    with pytest.raises(ValueError, match="unknown placeholders \\['answer'\\]"):
        register_template("t_extra", "{question} {answer}")
    assert "t_missing" not in TEMPLATES and "t_extra" not in TEMPLATES
