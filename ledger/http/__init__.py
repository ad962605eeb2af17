"""``ledger serve``: the HTTP API, a second adapter over ``ledger.service.LedgerService``."""
