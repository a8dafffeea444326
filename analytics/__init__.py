"""DuckDB: the ledger archive (the ledger of record once Redis trims `ledgerlog`)."""
