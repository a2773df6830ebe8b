"""cfrec test kit: real servers (PostgreSQL, a PostgREST subset, HTTP folders, dg dev and the production server), MovieLens-format
fixtures and tiny models, shared by the tests and the benchmarks."""
