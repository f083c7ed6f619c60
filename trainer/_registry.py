"""Keras-style identifier resolution shared by initializers, regularizers and optimizers.

Keras resolves `"he_normal"`, `{"class_name": "HeNormal", "config": {...}}` or a callable to an
object with `keras.initializers.get`, and turns it back into JSON with `serialize`. This module
gives each of our Keras-like modules the same three functions over one explicit registry: a
study spec can only name what was registered (built-ins, or user code decorated with
`register`), never an import path.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")

#: Keys Keras 3 writes next to class_name/config; accepted and ignored on input.
_KERAS_EXTRA_KEYS = frozenset({"module", "registered_name", "build_config", "compile_config"})


class UnknownIdentifierError(ValueError):
    """An identifier names nothing registered; the message lists what is known."""


class Registry(Generic[T]):
    """Names → classes or plain functions of one kind ("initializer", "regularizer", ...).

    A registered class is built with `cls.from_config(config)` when it has one, else
    `cls(**config)`, and serialized with `obj.get_config()`. A registered plain function is
    itself the object and has an empty config.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Any] = {}
        self._aliases: dict[str, str] = {}
        self._name_of: dict[Any, str] = {}
        self._before_lookup: Callable[[], None] | None = None

    def load_before_lookup(self, loader: Callable[[], None]) -> None:
        """Run `loader` once before the first lookup (installed plugins join lazily)."""
        self._before_lookup = loader

    def _ready(self) -> None:
        loader, self._before_lookup = self._before_lookup, None
        if loader is not None:
            loader()

    def register(
        self, name: str | None = None, *, aliases: tuple[str, ...] = ()
    ) -> Callable[[Any], Any]:
        """Decorator registering a class or function under `name` (default: its `__name__`).

        A class is also reachable by its class name, as in Keras (`"HeNormal"`).
        """

        def decorator(target: Any) -> Any:
            canonical = name or target.__name__
            extra = set(aliases)
            if inspect.isclass(target) and target.__name__ != canonical:
                extra.add(target.__name__)
            for key in (canonical, *sorted(extra)):
                owner = self._aliases.get(key)
                if owner is not None and self._entries[owner] is not target:
                    raise ValueError(f"{self.kind} name {key!r} is already registered")
            self._entries[canonical] = target
            self._aliases[canonical] = canonical
            for alias in extra:
                self._aliases[alias] = canonical
            self._name_of[target] = canonical
            return target

        return decorator

    def unregister(self, name: str) -> None:
        """Remove `name` and its aliases (a plugin left out by a new allow-list)."""
        target = self._entries.pop(name)
        self._aliases = {k: v for k, v in self._aliases.items() if v != name}
        self._name_of.pop(target, None)

    def names(self) -> list[str]:
        """The canonical names, sorted (what error messages and docs list)."""
        self._ready()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._ready()
        return isinstance(name, str) and name in self._aliases

    def entry(self, name: str) -> T:
        """What was registered under `name` (or an alias), as registered: never instantiated."""
        entry: T = self._entries[self.canonical_name(name)]
        return entry

    def canonical_name(self, name: str) -> str:
        self._ready()
        try:
            return self._aliases[name]
        except KeyError:
            raise self._unknown(name) from None

    def get(self, identifier: Any) -> T:
        """Resolve a name, a `{"class_name", "config"}` dict or a callable to an object."""
        self._ready()
        if isinstance(identifier, str):
            return self.deserialize({"class_name": identifier, "config": {}})
        if isinstance(identifier, Mapping):
            return self.deserialize(identifier)
        if inspect.isclass(identifier):
            return cast(T, identifier())  # Keras instantiates a class given as identifier
        if callable(identifier):
            result: T = identifier
            return result
        raise TypeError(
            f"cannot interpret {identifier!r} as a {self.kind}: expected a name, a "
            f'{{"class_name": ..., "config": {{...}}}} dict or a callable'
        )

    def deserialize(self, config: Mapping[str, Any]) -> T:
        unknown_keys = set(config) - {"class_name", "config"} - _KERAS_EXTRA_KEYS
        if unknown_keys:
            raise ValueError(f"unexpected keys in {self.kind} config: {sorted(unknown_keys)}")
        if "class_name" not in config:
            raise ValueError(f"a {self.kind} config needs a 'class_name'")
        class_name = config["class_name"]
        if not isinstance(class_name, str):
            raise TypeError(f"{self.kind} class_name must be a string, not {class_name!r}")
        params = dict(config.get("config") or {})
        target = self._entries[self.canonical_name(class_name)]
        if inspect.isclass(target):
            try:
                from_config: Callable[[dict[str, Any]], T] | None = getattr(
                    target, "from_config", None
                )
                built = from_config(params) if from_config is not None else target(**params)
            except TypeError as error:
                raise ValueError(
                    f"invalid config for {self.kind} {class_name!r}: {error}"
                ) from None
            return cast(T, built)
        if params:
            raise ValueError(f"{self.kind} {class_name!r} is a function and takes no config")
        function: T = target
        return function

    def serialize(self, obj: Any) -> dict[str, Any]:
        """`{"class_name": name, "config": {...}}`, the inverse of `deserialize`."""
        self._ready()
        if inspect.isfunction(obj) or inspect.isbuiltin(obj):
            name = self._name_of.get(obj)
            if name is None:
                raise self._unregistered(obj)
            return {"class_name": name, "config": {}}
        name = self._name_of.get(type(obj))
        if name is None:
            raise self._unregistered(obj)
        get_config = getattr(obj, "get_config", None)
        config = dict(get_config()) if get_config is not None else {}
        return {"class_name": name, "config": config}

    def _unknown(self, name: str) -> UnknownIdentifierError:
        close = difflib.get_close_matches(name, list(self._aliases), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return UnknownIdentifierError(
            f"unknown {self.kind} {name!r}{hint}. Known: {', '.join(self.names())}"
        )

    def _unregistered(self, obj: Any) -> ValueError:
        return ValueError(
            f"{obj!r} is not a registered {self.kind}; decorate it with "
            f"@trainer.{self.kind}s.register('name') so a spec can refer to it"
        )
