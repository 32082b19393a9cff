"""FHIRPath expressions for what codes cannot say, through fhirpathpy.

fhirpathpy's own ``parse`` swallows syntax errors and its compiled functions report unknown
functions only when run, so a mapping is checked here at load time: the expression is parsed
with fhirpathpy's ANTLR grammar and an error listener that raises, then compiled once and
run on an empty resource of the type it reads. fhirpathpy's ``evaluate`` mutates the
resource it is given; every call here gets a deep copy.

fhirpathpy and its ANTLR runtime (about 10 MiB) are imported on the first expression, so a
mapping without FHIRPath features never loads them.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from typing import Any

Evaluator = Callable[[Mapping[str, Any]], list[Any]]


def _check_syntax(expression: str) -> None:
    from antlr4 import CommonTokenStream, InputStream  # type: ignore[import-untyped]
    from antlr4.error.ErrorListener import ErrorListener  # type: ignore[import-untyped]
    from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
    from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

    class _Raise(ErrorListener):  # type: ignore[misc]
        def syntaxError(
            self, recognizer: Any, offending: Any, line: int, column: int, msg: str, e: Any
        ) -> None:
            raise ValueError(f"FHIRPath syntax error at column {column + 1}: {msg}")

    listener = _Raise()
    lexer = FHIRPathLexer(InputStream(expression))
    lexer.removeErrorListeners()
    lexer.addErrorListener(listener)
    parser = FHIRPathParser(CommonTokenStream(lexer))
    parser.removeErrorListeners()
    parser.addErrorListener(listener)
    parser.entireExpression()  # type: ignore[no-untyped-call]


# Functions that reach elements an expression does not name (any child, any descendant, a
# contained or referenced resource): where one is used, the resource is validated whole.
_REACH_ANYTHING = frozenset({"children", "descendants", "resolve"})
_NAME = re.compile(r"`?([A-Za-z_][A-Za-z0-9_]*)`?").fullmatch


def reached_names(expression: str) -> frozenset[str] | None:
    """Every name ``expression`` uses (elements, functions, types: over-approximating what
    it reads is safe), or None when it can reach elements it does not name.

    An element of a resource is reached only by naming it (``Patient.extension.value``) or
    through a function in ``_REACH_ANYTHING``; so validating each named element with its whole
    subtree covers everything the expression can read (``agent.types.ElementReach``)."""
    from antlr4 import InputStream
    from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer

    lexer = FHIRPathLexer(InputStream(expression))
    lexer.removeErrorListeners()
    names = set()
    for token in lexer.getAllTokens():
        match = _NAME(token.text)
        if match is not None:
            names.add(match.group(1))
    return None if names & _REACH_ANYTHING else frozenset(names)


def compile_fhirpath(expression: str, resource_type: str) -> Evaluator:
    """A function from a resource to the expression's results; ValueError (with the reason)
    if the expression does not parse or fails on an empty ``resource_type``."""
    import fhirpathpy
    from fhirpathpy.models import models

    _check_syntax(expression)
    compiled = fhirpathpy.compile(expression, models["r4"])
    try:
        compiled({"resourceType": resource_type}, {})
    except Exception as exc:  # fhirpathpy raises bare Exception for arity, unknown names...
        raise ValueError(f"FHIRPath expression fails: {exc}") from None

    def evaluate(resource: Mapping[str, Any]) -> list[Any]:
        return list(compiled(copy.deepcopy(resource), {}))

    return evaluate
