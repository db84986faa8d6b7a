"""Generated stand-ins for the licensed corpora, in their real on-disk layouts, with espeak-ng speech."""

from data_modules.generated.content import (
    CUES,
    EMOTIONS,
    OTHER,
    VOICE_SHIFTS,
    ContentConfig,
    Dialogue,
    Speaker,
    Turn,
    VoiceParams,
    emotion_keywords,
    emotional_sentence,
    generate_dialogue,
    make_speaker,
    neutral_sentence,
)
from data_modules.generated.iemocap import CORPUS_FOLDER as IEMOCAP_FOLDER
from data_modules.generated.iemocap import generate_iemocap
from data_modules.generated.speech import (
    EspeakNotFoundError,
    SpeechSynthesisError,
    SynthesisJob,
    espeak_executable,
    synthesize,
    synthesize_many,
)

__all__ = [
    "CUES",
    "EMOTIONS",
    "IEMOCAP_FOLDER",
    "OTHER",
    "VOICE_SHIFTS",
    "ContentConfig",
    "Dialogue",
    "EspeakNotFoundError",
    "Speaker",
    "SpeechSynthesisError",
    "SynthesisJob",
    "Turn",
    "VoiceParams",
    "emotion_keywords",
    "emotional_sentence",
    "espeak_executable",
    "generate_dialogue",
    "generate_iemocap",
    "make_speaker",
    "neutral_sentence",
    "synthesize",
    "synthesize_many",
]
