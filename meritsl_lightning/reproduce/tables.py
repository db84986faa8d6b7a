"""The tables the project reproduces. Table 1: MERITS-L's stage-wise test weighted F1 (paper Table 1)."""

from __future__ import annotations

from meritsl_lightning.reproduce.spec import CorpusSpec, StageSpec, TableSpec

TABLE1 = TableSpec(
    name="table1",
    title="MERITS-L stage-wise test weighted F1 (paper Table 1)",
    corpora=(
        CorpusSpec("iemocap", "iemocap4", "IEMOCAP_ROOT", "IEMOCAP-4", generated_size=12),
        CorpusSpec("meld", "meld7", "MELD_ROOT", "MELD-7"),
        CorpusSpec("cmu_mosi", "mosi2", "MOSI_ROOT", "CMU-MOSI-2"),
    ),
    stages=(
        StageSpec("stage1_text", "stage1_text", "text I", encoder="text"),
        StageSpec("stage1_audio", "stage1_audio", "speech I", encoder="speech"),
        StageSpec("stage2_text", "stage2_text", "text II", upstream={"stage1_checkpoint": "stage1_text"}),
        StageSpec("stage2_audio", "stage2_audio", "speech II", upstream={"stage1_checkpoint": "stage1_audio"}),
        StageSpec(
            "stage3",
            "stage3",
            "Stage III",
            upstream={"stage2_text_checkpoint": "stage2_text", "stage2_audio_checkpoint": "stage2_audio"},
        ),
    ),
    paper={
        ("iemocap", "iemocap4", "stage1_text"): 0.6984,
        ("iemocap", "iemocap4", "stage2_text"): 0.8385,
        ("iemocap", "iemocap4", "stage1_audio"): 0.6693,
        ("iemocap", "iemocap4", "stage2_audio"): 0.7795,
        ("iemocap", "iemocap4", "stage3"): 0.8648,
        ("meld", "meld7", "stage1_text"): 0.6381,
        ("meld", "meld7", "stage2_text"): 0.6524,
        ("cmu_mosi", "mosi2", "stage1_text"): 0.8541,
        ("cmu_mosi", "mosi2", "stage2_text"): 0.8602,
    },
    # about a third of the demo configs' epochs (and 12 instead of 16 IEMOCAP dialogues per session):
    # 3 corpora x 5 stages x 3 seeds, each its own process, must finish within 15 minutes on 2 cores
    generated_overrides={
        "stage1_text": ("--trainer.max_epochs=4",),
        "stage1_audio": ("--trainer.max_epochs=10",),
        "stage2_text": ("--trainer.max_epochs=15",),
        "stage2_audio": ("--trainer.max_epochs=15",),
        "stage3": ("--trainer.max_epochs=15",),
    },
)

TABLES: dict[str, TableSpec] = {TABLE1.name: TABLE1}
