"""Models and corpora in: the built-in model, GGUF files and checkpoint folders on either
TransformerLens host (`models`, `hf_loading`, `checkpoints`, `model_cache`), model files and
configs checked before any library reads them (`model_files`, `model_config`), and corpora read as
what they are (`corpus_reader`, `data`)."""
