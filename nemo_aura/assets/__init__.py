"""Offline model assets: converters from the formats that registry packages ship (CTranslate2 Whisper,
GGUF LLMs) to plain Hugging Face model directories that the recipe and the teachers load."""
