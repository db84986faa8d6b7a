"""The content model of the generated ERC corpora, independent of any corpus layout.

A dialogue is a sequence of turns by two speakers who mostly alternate. Its labelled turns are split
into *label segments* of ``min_segment``..``max_segment`` consecutive turns sharing one emotion
(``neu``, ``ang``, ``hap``, ``sad``); adjacent segments differ. Each segment draws its emotion with
weight ``neutral_weight`` for ``neu`` and 1 for each other emotion, excluding the previous segment's
emotion; with the default weight 2 about a third of the labelled turns are neutral.

Every turn of a non-neutral segment gets a *cue*, saying where its emotion can be heard:

- ``text``  (35 %): an emotion keyword or phrase in a templated sentence, spoken in a neutral voice;
- ``voice`` (35 %): a neutral sentence, spoken with the emotion's pitch, rate, loudness and pauses;
- ``both``  (10 %): both of the above;
- ``none``  (20 %): a neutral sentence in a neutral voice: only the neighbouring turns reveal it.

Neutral turns, and non-neutral turns without the matching cue, draw their words from one neutral
sentence generator and their voice from the speaker's neutral voice (same jitter), whatever their
label, so nothing but the designed cue and the context leaks the label. A segment whose turns all
drew ``none`` has one turn re-drawn, so every segment can be recovered from both modalities together
(Stage III), while one modality alone misses the segments where only the other carries a cue
(Stage II), and a single utterance misses every uncued turn (Stage I).

Words: neutral sentences come from 36 templates over about 250 slot words (objects, places, times,
people, errands). Text cues fill 20 frames shared by the three emotions with the emotion's
adjectives, judgements, exclamations and phrases, so that only the emotion words tell the emotions
apart (about 45 words per emotion occur nowhere else: ``emotion_keywords``).

Voice: each speaker has an espeak-ng voice and a neutral pitch, rate and loudness; every turn adds
jitter (pitch +-4, rate +-8 wpm, loudness +-1 dB). A voice cue shifts them (``VOICE_SHIFTS``): ang
+10 pitch, +50 wpm, +7 dB; hap +30 pitch, +20 wpm, +3.5 dB; sad -22 pitch, -50 wpm, -7 dB and
60 ms pauses between words.

A fraction ``other_fraction`` of turns are *other* turns: outside the segments, neutral words and
voice, meant to receive a code that the 4-class protocols drop (IEMOCAP: ``xxx``, ``fru``, ...).

Which codes, file formats, speaker names and voices a corpus uses is the layout's business: see
``iemocap.py``.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field

EMOTIONS = ("neu", "ang", "hap", "sad")
NEUTRAL = "neu"
OTHER = "other"  # a turn outside the label segments, whose code the 4-class protocols drop
CUES = ("text", "voice", "both", "none")

# --- words -----------------------------------------------------------------------------------------
# Emotion-free slot fillers. Words with an emotional tinge (party, funeral, hospital, ...) are left out
# so that a neutral sentence never carries a cue.
# fmt: off
_SLOTS: dict[str, tuple[str, ...]] = {
    "object": (
        "keys", "car", "report", "laptop", "umbrella", "ticket", "package", "letter", "jacket", "phone",
        "camera", "notebook", "bicycle", "lamp", "chair", "table", "map", "bag", "book", "radio",
        "printer", "schedule", "invoice", "receipt", "window", "folder", "charger", "kettle", "ladder",
        "calendar", "blanket", "toolbox", "suitcase", "envelope", "stapler", "microwave",
    ),
    "place": (
        "office", "station", "market", "library", "bank", "kitchen", "garage", "airport", "hotel",
        "school", "museum", "pharmacy", "bakery", "post office", "parking lot", "gym", "lobby",
        "warehouse", "harbor", "campus", "basement", "hallway",
    ),
    "past": (
        "yesterday", "this morning", "last week", "on Monday", "on Tuesday", "last Friday", "after lunch",
        "two days ago", "earlier today", "last month",
    ),
    "future": (
        "tomorrow", "tonight", "next week", "on Friday", "this afternoon", "in the evening", "on Thursday",
        "after lunch", "before dinner", "later today",
    ),
    "clock": (
        "at two", "at three thirty", "at nine", "at half past four", "at ten fifteen", "at seven",
        "at noon", "at eleven", "at quarter to six", "at eight",
    ),
    "person": (
        "brother", "sister", "neighbor", "manager", "cousin", "uncle", "aunt", "colleague", "landlord",
        "roommate", "teacher", "dentist", "mother", "father", "boss", "assistant",
    ),
    "verb": (
        "bring", "check", "move", "fix", "clean", "pick up", "drop off", "look at", "sign", "print",
        "send", "paint", "open", "close", "pack", "sort", "measure", "return", "borrow", "label",
    ),
    "verb_past": (
        "brought", "checked", "moved", "fixed", "cleaned", "picked up", "dropped off", "looked at",
        "signed", "printed", "sent", "painted", "opened", "closed", "packed", "sorted", "measured",
        "returned", "borrowed", "labeled",
    ),
    "topic": (
        "budget", "schedule", "weather", "traffic", "rent", "menu", "plan", "route", "contract",
        "inventory", "lease", "timetable", "forecast", "paperwork", "agenda", "shopping list",
    ),
    "event": (
        "meeting", "appointment", "inspection", "delivery", "lecture", "interview", "rehearsal",
        "training", "conference call", "seminar", "workshop", "checkup",
    ),
    "number": ("two", "three", "five", "ten", "twelve", "fifteen", "twenty", "thirty", "forty"),
    "color": ("blue", "green", "grey", "white", "black", "brown", "yellow"),
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"),
    "ordinal": ("first", "second", "third", "fourth", "fifth"),
}
# fmt: on
_SLOTS["object2"] = _SLOTS["object"]

_NEUTRAL_TEMPLATES: tuple[str, ...] = (
    "I {verb_past} the {object} {past}.",
    "Did you {verb} the {object} {past}?",
    "We should {verb} the {object} before the {event}.",
    "The {object} is in the {place}.",
    "My {person} said the {object} is at the {place}.",
    "The {event} starts {clock}.",
    "Can you {verb} the {object} for me {future}?",
    "My {person} is coming over {future}.",
    "The bus to the {place} leaves {clock}.",
    "Let me check the {topic} first.",
    "I need to go to the {place} {future}.",
    "Where did you put the {object}?",
    "It takes about {number} minutes to get to the {place}.",
    "We talked about the {topic} {past}.",
    "The {color} {object} belongs to my {person}.",
    "I think the {place} closes {clock}.",
    "Is the {event} still {future}?",
    "I will {verb} the {object} after the {event}.",
    "The {topic} was on the list {past}.",
    "Do we have {number} copies of the {object}?",
    "My {person} works near the {place}.",
    "You can leave the {object} next to the {object2}.",
    "I wrote the {topic} down in my notebook.",
    "The {place} is on the {ordinal} floor.",
    "Let's meet at the {place} {clock}.",
    "The {object} costs {number} dollars.",
    "I {verb_past} it for my {person} {past}.",
    "So the {event} is {future}, right?",
    "They moved the {event} to {day}.",
    "Okay, the {object} goes next to the {object2}.",
    "Then I went to the {place} and {verb_past} the {object}.",
    "The {topic} for next month is on the {color} folder.",
    "Who is going to {verb} the {object} {future}?",
    "Well, the {place} has a new {object}.",
    "I asked my {person} about the {topic}.",
    "We need {number} more minutes for the {event}.",
)

# Frames shared by the three emotions: the frame says nothing, only the emotion words in it do.
_EMOTION_TEMPLATES: tuple[str, ...] = (
    "I am so {adj} about the {object}.",
    "{excl} {neutral}",
    "{neutral} Honestly, I feel {adj}.",
    "That {event} was {judg}.",
    "You make me feel {adj}.",
    "It is {judg} that my {person} {verb_past} the {object}.",
    "{excl} The {event} is {future}.",
    "I am {adj}, the whole {topic} is {judg}.",
    "Honestly, the {topic} is {judg}.",
    "I was {adj} when I saw the {object}.",
    "{excl} I can't believe it.",
    "My {person} is {adj} about the {event} too.",
    "Everything about the {place} is {judg}.",
    "{phrase}",
    "{neutral} {phrase}",
    "I feel {adj} and {adj2}.",
    "{phrase} {excl}",
    "Look, the {object} is {judg}, and I am {adj}.",
    "I have been {adj} ever since the {event}.",
    "What a {judg} {event}.",
)

# fmt: off
_EMOTION_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "ang": {
        "adj": (
            "angry", "furious", "mad", "livid", "outraged", "enraged", "fuming", "irate", "fed up",
            "sick of it",
        ),
        "judg": (
            "ridiculous", "unacceptable", "outrageous", "insulting", "pathetic", "absurd", "infuriating",
            "disgraceful", "stupid", "unfair",
        ),
        "excl": (
            "How dare you!", "Shut up!", "Get out of here!", "That's enough!", "Stop lying to me!",
            "Are you kidding me?", "Don't you dare!", "Leave me alone!",
        ),
        "phrase": (
            "I'm sick and tired of your excuses.", "You never listen to a word I say!",
            "I hate it when you do that!", "You lied to me again!",
            "This is the last time I put up with you!", "Don't ever talk to me like that!",
            "You ruined everything, you idiot!", "I want my money back right now!",
        ),
    },
    "hap": {
        "adj": (
            "happy", "thrilled", "delighted", "excited", "glad", "overjoyed", "ecstatic", "cheerful",
            "grateful", "proud",
        ),
        "judg": (
            "wonderful", "amazing", "fantastic", "brilliant", "perfect", "lovely", "awesome", "marvelous",
            "beautiful", "incredible",
        ),
        "excl": (
            "Oh wow!", "Yes, finally!", "Hooray!", "That's great news!", "Congratulations!",
            "I can't wait!", "What a relief!", "Oh, I love it!",
        ),
        "phrase": (
            "This is the best day of my life!", "We did it, we actually did it!", "I love you so much!",
            "Let's celebrate tonight!", "I got the job!", "You made my day!",
            "Everything worked out perfectly!", "I'm so lucky to have you!",
        ),
    },
    "sad": {
        "adj": (
            "sad", "heartbroken", "lonely", "miserable", "depressed", "hopeless", "devastated", "gloomy",
            "empty", "helpless",
        ),
        "judg": (
            "tragic", "painful", "heartbreaking", "awful", "unbearable", "bleak", "dreadful", "depressing",
            "grim", "sorrowful",
        ),
        "excl": (
            "Oh no.", "I just want to cry.", "It's all over.", "Why did this happen?",
            "Nobody cares anymore.", "I can't bear this anymore.", "It's hopeless.", "Please, just let it go.",
        ),
        "phrase": (
            "I miss the way things used to be.", "He's gone and he's never coming back.",
            "I lost everything I had.", "Nobody even called me on my birthday.", "I cried the whole night.",
            "I feel like nobody needs me anymore.", "She passed away last winter.",
            "I don't know how to live without her.",
        ),
    },
}
# fmt: on


def _words(texts: list[str] | tuple[str, ...]) -> set[str]:
    return {w.strip(string.punctuation).lower() for text in texts for w in text.split()} - {""}


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return ""


def _frame_words(templates: tuple[str, ...]) -> set[str]:
    return _words([string.Formatter().vformat(t, (), _Blank()) for t in templates])


def emotion_keywords(emotion: str) -> frozenset[str]:
    """Words that occur only in `emotion`'s text cues: in no neutral sentence, frame or other emotion."""
    own = _words([item for group in _EMOTION_WORDS[emotion].values() for item in group])
    shared = _words([item for group in _SLOTS.values() for item in group])
    shared |= _frame_words(_NEUTRAL_TEMPLATES) | _frame_words(_EMOTION_TEMPLATES)
    for other, groups in _EMOTION_WORDS.items():
        if other != emotion:
            shared |= _words([item for group in groups.values() for item in group])
    return frozenset(own - shared)


def _fill(rng: random.Random, template: str, slots: dict[str, tuple[str, ...]]) -> str:
    values: dict[str, str] = {}
    for _, name, _, _ in string.Formatter().parse(template):
        if name and name not in values:
            values[name] = rng.choice(slots[name])
    return template.format_map(values)


def neutral_sentence(rng: random.Random) -> str:
    """A neutral sentence: the words of every turn whose text carries no cue."""
    return _fill(rng, rng.choice(_NEUTRAL_TEMPLATES), _SLOTS)


def emotional_sentence(rng: random.Random, emotion: str) -> str:
    """A sentence whose words carry `emotion` (one of ang, hap, sad)."""
    words = _EMOTION_WORDS[emotion]
    template = rng.choice(_EMOTION_TEMPLATES)
    adj, adj2 = rng.sample(words["adj"], 2)
    slots = {**_SLOTS, **words, "adj": (adj,), "adj2": (adj2,), "neutral": (neutral_sentence(rng),)}
    return _fill(rng, template, slots)


# --- voices ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VoiceParams:
    """Voice of one turn: espeak-ng voice, pitch (0-99), rate (wpm) and word gap (10 ms units), and the
    loudness of its active speech in dBFS (applied after synthesis)."""

    voice: str
    pitch: int
    speed: int
    word_gap: int
    level_db: float


@dataclass(frozen=True)
class Speaker:
    """One speaker: a layout name (e.g. "F"), an espeak voice and the neutral pitch, rate and loudness."""

    name: str
    voice: str
    pitch: int
    speed: int
    level_db: float


@dataclass(frozen=True)
class VoiceShift:
    """How an emotion changes a speaker's neutral voice: pitch, rate, loudness (dB) offsets, extra word gap."""

    pitch: int
    speed: int
    level_db: float
    word_gap: int


# ang loud and fast, hap high, louder and faster, sad low, slow, quiet and pausing. Loudness is set
# on the synthesised audio rather than with espeak's amplitude, which compresses loud speech and
# differs between voices. The offsets are several times the jitter and the speaker spread, so that
# per-band log-mel means and stds separate the emotions.
VOICE_SHIFTS: dict[str, VoiceShift] = {
    "neu": VoiceShift(pitch=0, speed=0, level_db=0.0, word_gap=0),
    "ang": VoiceShift(pitch=10, speed=50, level_db=7.0, word_gap=0),
    "hap": VoiceShift(pitch=30, speed=20, level_db=3.5, word_gap=0),
    "sad": VoiceShift(pitch=-22, speed=-50, level_db=-7.0, word_gap=6),
}
# Active-speech RMS of a neutral voice, low enough that the loudest ang turns peak below full scale.
NEUTRAL_LEVEL_DB = -30.0


def make_speaker(rng: random.Random, name: str, voice: str) -> Speaker:
    """A speaker on an espeak voice with a random neutral pitch (50 +- 6), rate (158..178 wpm) and level (+- 1 dB)."""
    return Speaker(
        name=name,
        voice=voice,
        pitch=50 + rng.randint(-6, 6),
        speed=rng.randint(158, 178),
        level_db=round(NEUTRAL_LEVEL_DB + rng.uniform(-1.0, 1.0), 2),
    )


def voice_for(rng: random.Random, speaker: Speaker, emotion: str) -> VoiceParams:
    """The speaker's voice for one turn, shifted by `emotion`'s voice cue, with per-turn jitter."""
    shift = VOICE_SHIFTS[emotion]
    return VoiceParams(
        voice=speaker.voice,
        pitch=min(99, max(0, speaker.pitch + shift.pitch + rng.randint(-4, 4))),
        speed=max(80, speaker.speed + shift.speed + rng.randint(-8, 8)),
        word_gap=shift.word_gap + rng.randint(0, 1),
        level_db=round(speaker.level_db + shift.level_db + rng.uniform(-1.0, 1.0), 2),
    )


# --- dialogues -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ContentConfig:
    """Knobs of the content model (see the module docstring)."""

    min_turns: int = 10
    max_turns: int = 16
    min_segment: int = 2
    max_segment: int = 5
    neutral_weight: float = 2.0
    cue_weights: tuple[tuple[str, float], ...] = (
        ("text", 0.35),
        ("voice", 0.35),
        ("both", 0.10),
        ("none", 0.20),
    )
    other_fraction: float = 0.10
    speaker_switch: float = 0.85

    def __post_init__(self) -> None:
        if not 2 <= self.min_turns <= self.max_turns:
            raise ValueError(
                f"turns per dialogue: expected 2 <= min_turns <= max_turns, got {self.min_turns}..{self.max_turns}"
            )
        if not 1 <= self.min_segment <= self.max_segment:
            raise ValueError(
                f"segment length: expected 1 <= min <= max, got {self.min_segment}..{self.max_segment}"
            )
        if self.min_turns < self.min_segment:
            raise ValueError(
                f"min_turns={self.min_turns} is shorter than one segment (min_segment={self.min_segment})"
            )
        if sorted(c for c, _ in self.cue_weights) != sorted(CUES):
            raise ValueError(f"cue_weights: expected one weight for each of {CUES}, got {self.cue_weights}")
        if not 0.0 <= self.other_fraction < 1.0:
            raise ValueError(f"other_fraction: expected a value in [0, 1), got {self.other_fraction}")


@dataclass(frozen=True)
class Turn:
    """One turn: who speaks, its emotion (or OTHER), its label segment (-1 for OTHER), its cue, words and voice."""

    speaker: str
    emotion: str
    segment: int
    cue: str
    text: str
    voice: VoiceParams

    @property
    def text_cue(self) -> bool:
        return self.cue in ("text", "both")

    @property
    def voice_cue(self) -> bool:
        return self.cue in ("voice", "both")


@dataclass(frozen=True)
class Dialogue:
    """A dialogue's speakers and turns in time order."""

    speakers: tuple[Speaker, ...]
    turns: tuple[Turn, ...] = field(default_factory=tuple)


def segment_lengths(rng: random.Random, total: int, lo: int, hi: int) -> list[int]:
    """Random lengths in [lo, hi] that sum to `total` (never leaving a remainder shorter than `lo`)."""
    if total < lo:
        raise ValueError(f"cannot split {total} turns into segments of {lo}..{hi}")
    lengths: list[int] = []
    while total > 0:
        choices = [k for k in range(lo, hi + 1) if k == total or total - k >= lo]
        if not choices:
            raise ValueError(f"cannot split {total} turns into segments of {lo}..{hi}")
        lengths.append(rng.choice(choices))
        total -= lengths[-1]
    return lengths


def segment_emotions(rng: random.Random, count: int, neutral_weight: float) -> list[str]:
    """Emotions of `count` consecutive segments; adjacent ones differ."""
    emotions: list[str] = []
    for _ in range(count):
        options = [e for e in EMOTIONS if not emotions or e != emotions[-1]]
        weights = [neutral_weight if e == NEUTRAL else 1.0 for e in options]
        emotions.append(rng.choices(options, weights)[0])
    return emotions


def _segment_cues(rng: random.Random, length: int, config: ContentConfig) -> list[str]:
    names, weights = zip(*config.cue_weights, strict=True)
    cues = rng.choices(names, weights, k=length)
    if all(c == "none" for c in cues):
        # Every segment stays recoverable from both modalities together; re-draw one turn's cue.
        cues[rng.randrange(length)] = rng.choices(
            [n for n in names if n != "none"], [w for n, w in config.cue_weights if n != "none"]
        )[0]
    return cues


def _speaker_sequence(rng: random.Random, count: int, speakers: int, switch: float) -> list[int]:
    order = [rng.randrange(speakers)]
    for _ in range(count - 1):
        order.append((order[-1] + 1) % speakers if rng.random() < switch else order[-1])
    return order


def generate_dialogue(
    rng: random.Random, speakers: tuple[Speaker, ...], config: ContentConfig | None = None
) -> Dialogue:
    """One dialogue: label segments, per-turn cues, sentences and voices, all drawn from `rng`."""
    config = config or ContentConfig()
    n_turns = rng.randint(config.min_turns, config.max_turns)
    other = [rng.random() < config.other_fraction for _ in range(n_turns)]
    while n_turns - sum(other) < config.min_segment:
        other[other.index(True)] = False
    lengths = segment_lengths(rng, n_turns - sum(other), config.min_segment, config.max_segment)
    emotions = segment_emotions(rng, len(lengths), config.neutral_weight)
    labelled: list[tuple[str, int, str]] = []  # (emotion, segment, cue) of the labelled turns in order
    for index, (length, emotion) in enumerate(zip(lengths, emotions, strict=True)):
        cues = ["none"] * length if emotion == NEUTRAL else _segment_cues(rng, length, config)
        labelled += [(emotion, index, cue) for cue in cues]
    who = _speaker_sequence(rng, n_turns, len(speakers), config.speaker_switch)
    turns: list[Turn] = []
    queue = iter(labelled)
    for position in range(n_turns):
        emotion, segment, cue = (OTHER, -1, "none") if other[position] else next(queue)
        speaker = speakers[who[position]]
        text_emotion = emotion if cue in ("text", "both") else NEUTRAL
        voice_emotion = emotion if cue in ("voice", "both") else NEUTRAL
        text = emotional_sentence(rng, text_emotion) if text_emotion != NEUTRAL else neutral_sentence(rng)
        turns.append(Turn(speaker.name, emotion, segment, cue, text, voice_for(rng, speaker, voice_emotion)))
    return Dialogue(speakers=speakers, turns=tuple(turns))
