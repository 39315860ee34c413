"""Every exception class flowlang defines lives in flowlang.errors and is exported by flowlang."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import flowlang
import flowlang.errors


def _flowlang_modules() -> list[str]:
    """Every module of the flowlang package (the compiled extension's too, when built)."""
    names = ["flowlang"]
    for info in pkgutil.walk_packages(flowlang.__path__, "flowlang."):
        if not info.name.endswith("__main__"):  # running it is the command line
            names.append(info.name)
    return names


def _exception_classes() -> dict[str, type[BaseException]]:
    """Every public exception (or warning) class defined in a flowlang module, by name."""
    found: dict[str, type[BaseException]] = {}
    for name in _flowlang_modules():
        module = importlib.import_module(name)
        for attribute, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__.startswith("flowlang")
                and not attribute.startswith("_")
            ):
                found[value.__qualname__] = value
    return found


def test_every_exception_class_is_defined_in_errors() -> None:
    classes = _exception_classes()
    assert len(classes) >= 20
    elsewhere = sorted(
        f"{cls.__module__}.{name}"
        for name, cls in classes.items()
        if cls.__module__ != "flowlang.errors"
    )
    assert elsewhere == []


def test_every_exception_class_is_exported_from_flowlang() -> None:
    for name, cls in _exception_classes().items():
        assert name in flowlang.__all__, name
        assert getattr(flowlang, name) is cls
        assert name in flowlang.errors.__all__, name


def test_error_classes_keep_their_bases() -> None:
    from flowlang.errors import (
        DataLimitError,
        DocumentError,
        FlowError,
        FlowLimitError,
        JsonSyntaxError,
        PatternError,
        PurePythonWarning,
    )

    assert issubclass(DataLimitError, FlowLimitError)
    assert issubclass(JsonSyntaxError, DocumentError)
    assert issubclass(DocumentError, FlowError)
    assert issubclass(PatternError, ValueError)
    assert issubclass(PurePythonWarning, RuntimeWarning)
