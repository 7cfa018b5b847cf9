"""Error types. Every message says what was expected, what was found and what to do."""


class MixOfShowError(Exception):
    """Base class of every error the pack raises on purpose."""


class ConceptFileError(MixOfShowError, ValueError):
    """A concept file cannot be read: missing, corrupt, truncated, unsafe or of an unknown layout."""


class BaseModelMismatchError(MixOfShowError, ValueError):
    """A concept was made for another base model (text width, layer count or family)."""


class KeyMappingError(MixOfShowError, ValueError):
    """Weights name modules that the target model does not have."""


class ConceptWordError(MixOfShowError, ValueError):
    """Concept words clash, are malformed, or are missing where they are needed."""


class RegionSpecError(MixOfShowError, ValueError):
    """A region specification is malformed. ``code`` names the rule (shared with the JS validator)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def first_of(items, limit: int) -> str:
    """``items`` joined for an error message: the first ``limit``, then how many more."""
    items = list(items)
    return ", ".join(items[:limit]) + (f" (+{len(items) - limit} more)" if len(items) > limit else "")
