"""Name -> factory registries with errors that list the valid names.

Every family of components (environments, memories, policies) has one `Registry`.
Components register themselves with a decorator at import time; users build them with
`make(name, **kwargs)`. Unknown names and unknown keyword arguments fail loudly, naming
what is allowed, because a silently ignored option is the classic source of
irreproducible results.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly.
        return str(self.args[0])


class Registry(Generic[T]):
    """A mapping from names to factories (classes or functions) of one kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: `@REGISTRY.register("hcam")` on a class or a factory function."""

        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories and self._factories[name] is not factory:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._factories[name] = factory
            return factory

        return decorator

    def names(self) -> list[str]:
        return sorted(self._factories)

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._factories:
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'; valid names: {self.names() or '[] (none registered yet)'}"
            )
        return self._factories[name]

    def make(self, name: str, **kwargs: Any) -> T:
        factory = self.get(name)
        check_kwargs(factory, kwargs, what=f"{self.kind} '{name}'")
        return factory(**kwargs)

    def __contains__(self, name: object) -> bool:
        return name in self._factories


def check_kwargs(factory: Callable[..., Any], kwargs: dict[str, Any], what: str) -> None:
    """Raise a TypeError naming the unknown keyword arguments and the accepted ones."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(f"{what}: unknown option(s) {unknown}; accepted options: {sorted(accepted)}")
