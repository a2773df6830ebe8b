"""cfrec test kit: real servers (PostgreSQL, a PostgREST subset, HTTP folders, dagster dev), MovieLens-format
fixtures and tiny models, shared by the tests and the benchmarks."""
