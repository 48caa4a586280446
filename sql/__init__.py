"""The bundled schema: SQL files applied in name order by mfcolab.schema."""
