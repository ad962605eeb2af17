"""What the read side refuses to answer, as the adapters catch it."""


class QueryError(ValueError):
    """The question cannot be answered as asked (unknown election, region, ...)."""
