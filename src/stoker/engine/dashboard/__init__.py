"""The engine's web dashboard (server-rendered pages over the engine's database)."""
