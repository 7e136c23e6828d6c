"""`Registry`: the named components of one kind that recipes and the command line choose from."""

from keras_bat.errors import UsageError


class Registry:
    """Names -> components of one kind (encoder families, heads, frontends, dataset readers).

    `registry[name]` is the component, or a `UsageError` that lists the names
    there are; the command line's choices and the tests' lists are read from
    here, so a new component is registered once and found everywhere.

    Example:
    >>> HEADS = Registry("head type", {"cgp": CGP})
    >>> HEADS.register("linear", LinearHead)
    >>> HEADS["cgp"], sorted(HEADS)
    """

    def __init__(self, kind, entries=None):
        self.kind = kind
        self._entries = {}
        for name, entry in (entries or {}).items():
            self.register(name, entry)

    def register(self, name, entry):
        """Adds `entry` as `name` (a name is registered once) and returns it."""
        if name in self._entries:
            raise UsageError(f"A {self.kind} called {name!r} is registered already.")
        self._entries[name] = entry
        return entry

    def unregister(self, name):
        """Takes `name` out again (a plugin's or a test's component)."""
        return self._entries.pop(name)

    def __getitem__(self, name):
        if name not in self._entries:
            raise UsageError(f"Unknown {self.kind} {name!r}; expected one of {sorted(self._entries)}.")
        return self._entries[name]

    def __contains__(self, name):
        return name in self._entries

    def __iter__(self):
        return iter(self._entries)

    def __len__(self):
        return len(self._entries)

    def items(self):
        return self._entries.items()

    def values(self):
        return self._entries.values()

    def __repr__(self):
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
