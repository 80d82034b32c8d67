"""The v2 (cache-manager) API of LLM-DataDist, as in CANN's ``llm_datadist.v2``."""
