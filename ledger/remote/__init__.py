"""A served ledger seen from outside: the HTTP client of ``ledger mirror`` and of
``ledger check-receipt --url``."""
