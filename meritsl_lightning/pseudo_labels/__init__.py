"""Silver labels for text pre-training: transcription (faster-whisper) and LLM labelling.

Submodules are imported on use (``meritsl_lightning.pseudo_labels.transcribe`` pulls in the audio
stack), so this package re-exports nothing.
"""
