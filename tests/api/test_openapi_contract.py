"""The OpenAPI document says what the routes do: readable operation ids, and the
error statuses each route documents are exactly those it can answer with.

How "can answer with" is found, for each route in the document, with no server:

- **Its own refusals** (`ApiError` subclasses): every function reachable from the
  route's endpoint and its FastAPI dependencies (taken from the route's own
  dependency tree, so `Depends(scoped(...))` and `admin_token` count), following
  calls through the modules' real globals (`service.f`, `errors.NotFound`) and,
  where a call goes through an object (`rt.usage.report_batch`), to every method
  of that name in `tenantry.api` and `tenantry.db`. Every construction of an
  `ApiError` subclass met on the way (`raise NotFound(...)`, or a helper that
  returns one) is an answer the route can give. This over-approximates (a
  method name shared by two classes brings both), never under-approximates
  what the code constructs; a status documented outside it cannot happen.
- **The answers the app gives for groups of routes** (api/errors.py, api/limits.py):
  422 for a route with parameters or a body, or that reads its body with
  `parse_body` (FastAPI validates them all, and documents 422 on such routes
  by itself, even where a plain string path parameter cannot fail); 413 for
  every route that takes a body (the body limit refuses one by its declared
  length before the route runs; a body sent to a route that takes none is
  outside the contract); 503 for every route that uses the runtime
  (PostgreSQL and Redis failures are 503 `database_unavailable` or
  `storage_error`).

The other direction is also checked where the answers happen: schemathesis's
`status_code_conformance` (tests/api/test_fuzz.py) fails on any answer the
document does not list for that route, over thousands of generated requests.
The database's IntegrityError → 409 and DataError → 422 translations are
safety nets for what the validation before them missed; schemathesis reports
them as undocumented answers if they ever happen.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
import textwrap
from collections.abc import Callable, Iterator
from types import FunctionType, ModuleType
from typing import Any

import pytest
from fastapi import FastAPI, Request, routing
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

import tenantry.api
import tenantry.db
from tenantry.api.app import create_app
from tenantry.api.errors import ApiError
from tenantry.api.runtime import Runtime
from tenantry.api.settings import ApiSettings

CAMEL_CASE = re.compile(r"[a-z][a-zA-Z0-9]*")


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return create_app(ApiSettings())


def documented_routes(app: FastAPI) -> Iterator[Any]:
    """Each route of the document as FastAPI sees it once included: path, methods and the
    dependency tree with its routers' dependencies."""
    for context in routing.iter_route_contexts(app.routes):
        if isinstance(context.original_route, APIRoute) and context.include_in_schema:
            yield context


def test_operation_ids_are_camel_case_names_of_the_route_functions(app: FastAPI) -> None:
    document = app.openapi()
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert [i for i in ids if not CAMEL_CASE.fullmatch(i)] == []
    by_path = {(path, method): op["operationId"] for path, ops in document["paths"].items()
               for method, op in ops.items()}  # fmt: skip
    assert by_path[("/v1/admin/invoices/{invoice_id}/pdf", "get")] == "getInvoicePdf"
    assert by_path[("/v1/usage", "post")] == "postUsage"


# ------------------------------------------------------------- documented errors


def _modules(package: ModuleType) -> Iterator[ModuleType]:
    yield package
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        yield importlib.import_module(info.name)


def _methods_by_name() -> dict[str, list[FunctionType]]:
    """Every method of a class of tenantry.api and tenantry.db, by its name."""
    found: dict[str, list[FunctionType]] = {}
    for module in [*_modules(tenantry.api), *_modules(tenantry.db)]:
        for value in vars(module).values():
            if not inspect.isclass(value) or value.__module__ != module.__name__:
                continue
            for member in vars(value).values():
                function = inspect.unwrap(getattr(member, "__func__", member))
                if isinstance(function, FunctionType):
                    found.setdefault(function.__name__, []).append(function)
    return found


METHODS = _methods_by_name()


def _ours(value: Any) -> bool:
    return str(getattr(value, "__module__", "")).startswith("tenantry.")


def _resolve(node: ast.expr, function: FunctionType) -> list[Any]:
    """What an expression may be: through the function's globals and closure, or for a
    method of an object, every method of that name."""
    names = dict(function.__globals__)
    if function.__closure__:
        names.update(zip(function.__code__.co_freevars,
                         (c.cell_contents for c in function.__closure__), strict=True))  # fmt: skip
    if isinstance(node, ast.Name):
        return [names[node.id]] if node.id in names else []
    if isinstance(node, ast.Attribute):
        base = (
            _resolve(node.value, function)
            if isinstance(node.value, ast.Name | ast.Attribute)
            else []
        )
        if base and (inspect.ismodule(base[0]) or inspect.isclass(base[0])):
            member = getattr(base[0], node.attr, None)
            return [member] if member is not None else []
        return list(METHODS.get(node.attr, []))
    if isinstance(node, ast.Tuple):
        return [value for element in node.elts for value in _resolve(element, function)]
    return []


class _Reach:
    """The ApiError classes a function can let out: those it constructs, and those of
    the functions it calls, less what a surrounding `except` catches for good."""

    def __init__(self) -> None:
        self.memo: dict[FunctionType, set[type[ApiError]]] = {}
        self.visited: set[str] = set()

    def function(self, function: Any) -> set[type[ApiError]]:
        function = inspect.unwrap(getattr(function, "__func__", function))
        if not isinstance(function, FunctionType) or not _ours(function):
            return set()
        if function in self.memo:
            return self.memo[function]
        self.memo[function] = set()  # a recursive call adds nothing new
        self.visited.add(function.__qualname__)
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
        except (OSError, TypeError):
            return set()
        body = tree.body[0]
        assert isinstance(body, ast.FunctionDef | ast.AsyncFunctionDef)
        found = set().union(*(self.node(statement, function) for statement in body.body))
        self.memo[function] = found
        return found

    def node(self, node: ast.AST, function: FunctionType) -> set[type[ApiError]]:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            return set()  # a nested function counts where it is called
        if isinstance(node, ast.Try):
            inside = set().union(*(self.node(s, function) for s in node.body))
            for handler in node.handlers:
                caught = (
                    tuple(c for c in _resolve(handler.type, function) if inspect.isclass(c))
                    if handler.type is not None
                    else (BaseException,)
                )
                reraised = any(
                    isinstance(n, ast.Raise) and n.exc is None for n in ast.walk(handler)
                )
                if caught and not reraised:
                    inside = {error for error in inside if not issubclass(error, caught)}
            rest = [*node.handlers, *node.orelse, *node.finalbody]
            return inside.union(*(self.node(s, function) for s in rest))
        found: set[type[ApiError]] = set()
        if isinstance(node, ast.Call):
            for target in _resolve(node.func, function):
                if inspect.isclass(target) and issubclass(target, ApiError):
                    found.add(target)
                elif _ours(target) and callable(target) and not inspect.isclass(target):
                    found |= self.function(target)
        for child in ast.iter_child_nodes(node):
            found |= self.node(child, function)
        return found


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    if dependant.call is not None:
        yield dependant.call
    for sub in dependant.dependencies:
        yield from _calls(sub)


def _validated(dependant: Dependant) -> bool:
    """Whether the route has inputs FastAPI validates (and documents a 422 for)."""
    params = [*dependant.path_params, *dependant.query_params, *dependant.header_params,
              *dependant.cookie_params, *dependant.body_params]  # fmt: skip
    return bool(params) or any(_validated(sub) for sub in dependant.dependencies)


def _uses_runtime(route: Any) -> bool:
    for call in _calls(route.dependant):
        hints = getattr(call, "__annotations__", {}).values()
        if any(h in (Runtime, Request, "Request", "RuntimeDep") or "RuntimeDep" in str(h)
               for h in hints):  # fmt: skip
            return True
    return False


def can_answer(route: Any, operation: dict[str, Any]) -> set[int]:
    reach = _Reach()
    errors = set().union(*(reach.function(call) for call in _calls(route.dependant)))
    statuses = {error.status_code for error in errors}
    if _validated(route.dependant) or "parse_body" in reach.visited:
        statuses.add(422)
    if "requestBody" in operation:
        statuses.add(413)
    if _uses_runtime(route):
        statuses.add(503)
    return statuses


def test_documented_errors_are_the_errors_routes_can_answer_with(app: FastAPI) -> None:
    document = app.openapi()
    wrong = {}
    for route in documented_routes(app):
        for method in route.methods:
            operation = document["paths"][route.path_format][method.lower()]
            documented = {int(s) for s in operation["responses"] if int(s) >= 400}
            possible = can_answer(route, operation)
            if documented != possible:
                wrong[f"{method} {route.path}"] = {
                    "undocumented": sorted(possible - documented),
                    "impossible": sorted(documented - possible),
                }
    assert wrong == {}
