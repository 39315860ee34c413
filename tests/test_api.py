"""The public API: compile, render, Template, Engine options, filters, references, errors."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

import flowlang
from flowlang import FlowFilterError, FlowSyntaxError, SourcePosition

EngineFactory = Callable[..., flowlang.Engine]
CONTEXT = {"contact": {"name": "Ann", "emails": ["a@example.com"], "custom_fields": {"MRR": 1200}}}


def test_compile_is_memoized_by_source_and_syntax() -> None:
    first = flowlang.compile("<<contact.name>>")
    assert flowlang.compile("<<contact.name>>") is first
    assert flowlang.compile("<<contact.name>>", syntax="cloudtalk") is not first
    assert flowlang.render("<<contact.name>>", CONTEXT) == "Ann"


def test_engine_cache_is_bounded(make_engine: EngineFactory) -> None:
    engine = make_engine(cache_size=2)
    a = engine.compile("<<a>>")
    engine.compile("<<b>>")
    engine.compile("<<c>>")
    assert engine.compile("<<a>>") is not a  # evicted, compiled again
    assert make_engine(cache_size=0).compile("<<a>>") is not make_engine(cache_size=0).compile(
        "<<a>>"
    )


def test_template_attributes(make_engine: EngineFactory, backend: str) -> None:
    template = make_engine().compile('Hi <<contact.name>>, MRR <<contact.custom_fields["MRR"]>>')
    assert template.source == 'Hi <<contact.name>>, MRR <<contact.custom_fields["MRR"]>>'
    assert template.backend == backend
    assert not template.is_expression
    assert make_engine().compile("<<contact.name>>").is_expression
    assert template.render(CONTEXT) == "Hi Ann, MRR 1200"
    with pytest.raises(AttributeError):
        template.source = "changed"  # type: ignore[misc]


def test_references_list_every_path_with_its_place(make_engine: EngineFactory) -> None:
    source = (
        "<<input[123].value ?? input[vars.step].value>> "
        '<<steps.lookup.response.body["tier"] | default(contact.type)>>'
    )
    references = make_engine().compile(source).references
    assert [reference.path for reference in references] == [
        ("input", 123, "value"),
        ("input", None, "value"),
        ("vars", "step"),
        ("steps", "lookup", "response", "body", "tier"),
        ("contact", "type"),
    ]
    assert str(references[0]) == "input[123].value"
    first = references[0]
    assert source[first.start : first.end] == "input[123].value"
    assert references[3].root == "steps"


def test_custom_filters(make_engine: EngineFactory) -> None:
    def mask(value: Any, keep: int = 4) -> str:
        text = str(value)
        return "*" * max(0, len(text) - keep) + text[-keep:]

    def explode(value: Any) -> Any:
        raise ValueError("boom " + "x" * 500)

    engine = make_engine(filters={"mask": mask, "explode": explode})
    assert engine.render("<<'4111111111111111' | mask>>", {}) == "************1111"
    assert engine.render("<<'4111111111111111' | mask(2)>>", {}) == "**************11"
    with pytest.raises(FlowSyntaxError, match="filter 'mask' takes 0 to 1 arguments, not 2"):
        engine.compile("<<x | mask(1, 2)>>")
    with pytest.raises(FlowFilterError, match="filter 'explode' raised ValueError: boom") as caught:
        engine.render("<<x | explode>>", {})
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize(
    ("name", "function", "error"),
    [
        ("upper", lambda value: value, "built in"),
        ("not a name", lambda value: value, "not a valid name"),
        ("and", lambda value: value, "not a valid name"),
        ("noargs", lambda: None, "piped value"),
        ("notcallable", 42, "callable"),
    ],
)
def test_bad_custom_filters_are_refused(name: str, function: Any, error: str) -> None:
    with pytest.raises((ValueError, TypeError), match=error):
        flowlang.Engine(filters={name: function})


def test_engine_options_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown syntax 'mustache'"):
        flowlang.Engine(syntax="mustache")
    with pytest.raises(ValueError, match="unknown backend 'rust'"):
        flowlang.Engine(backend="rust")
    with pytest.raises(TypeError, match="a template is a str"):
        flowlang.Engine().compile(b"<<x>>")  # type: ignore[arg-type]


def test_syntax_error_names_file_line_column_step_and_field(make_engine: EngineFactory) -> None:
    position = SourcePosition(
        filename="flows/billing.yaml", line=14, column=15, step="route", field="property"
    )
    with pytest.raises(FlowSyntaxError) as caught:
        make_engine().compile('<<contact.custom_fields["Plan Tier">>', position=position)
    error = caught.value
    assert (error.line, error.column) == (14, 15 + 35)
    assert str(error) == (
        "expected ']' to close the index, found the end of the expression\n"
        "  --> flows/billing.yaml:14:50 (step 'route', field 'property')\n"
        "   |\n"
        '14 | <<contact.custom_fields["Plan Tier">>\n'
        "   |                                    ^"
    )


def test_syntax_error_caret_stays_readable_on_long_lines(make_engine: EngineFactory) -> None:
    source = "x" * 500 + "<<a ==>>" + "y" * 500
    with pytest.raises(FlowSyntaxError) as caught:
        make_engine().compile(source)
    lines = str(caught.value).splitlines()
    assert all(len(line) < 130 for line in lines)
    code_line, caret_line = lines[-2], lines[-1]
    assert code_line[caret_line.index("^")] == ">"


def test_templates_are_shared_safely_across_threads(make_engine: EngineFactory) -> None:
    template = make_engine().compile("<<n>>:<<contact.name>>")
    failures = []

    def worker(number: int) -> None:
        for _ in range(2000):
            if template.render({"n": number, "contact": {"name": "Ann"}}) != f"{number}:Ann":
                failures.append(number)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_lists_returned_are_fresh(make_engine: EngineFactory) -> None:
    template = make_engine().compile("<<[1, 2]>>")
    first = template.render({})
    first.append(3)
    assert template.render({}) == [1, 2]


def test_mapping_contexts_other_than_dict(make_engine: EngineFactory) -> None:
    from types import MappingProxyType

    context = MappingProxyType({"contact": MappingProxyType({"emails": ("a@x", "b@x")})})
    assert (
        make_engine().render("<<contact.emails[-1]>> <<contact.emails | length>>", context)
        == "b@x 2"
    )
