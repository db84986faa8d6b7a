"""The tables the project reproduces. Table 1: MERITS-L's stage-wise test weighted F1 (paper Table 1); Fig. 4:
hierarchical against end-to-end training (the paper plots it without numbers, so no paper values); oof: the
hierarchy against the same chain on out-of-fold Stage I embeddings (beyond the paper)."""

from __future__ import annotations

from dataclasses import replace

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
    # the demo configs' Stage I text epochs (fewer leave MELD's text model predicting one class), half their
    # other epochs, and 12 instead of 16 IEMOCAP dialogues per session: 3 corpora x 5 stages x 3 seeds, each
    # its own process, finish within 15 minutes on 2 cores
    generated_overrides={
        "stage1_text": ("--trainer.max_epochs=12",),
        "stage1_audio": ("--trainer.max_epochs=15",),
        "stage2_text": ("--trainer.max_epochs=20",),
        "stage2_audio": ("--trainer.max_epochs=20",),
        "stage3": ("--trainer.max_epochs=20",),
    },
)

FIG4_JOINT = {"stage1_text_checkpoint": "stage1_text", "stage1_audio_checkpoint": "stage1_audio"}

FIG4 = TableSpec(
    name="fig4",
    title="Hierarchical vs end-to-end training, test weighted F1 (paper Fig. 4)",
    corpora=(TABLE1.corpus("iemocap"),),  # the joint configs exist for IEMOCAP (experiments/ablations/fig4/)
    stages=(
        *TABLE1.stages[:4],
        replace(TABLE1.stage("stage3"), label="hierarchical (Stage III)"),
        StageSpec("joint", "joint", "joint II+III", upstream=FIG4_JOINT, folder="ablations/fig4"),
        StageSpec(
            "joint_deep", "joint", "joint II+III, per-modality losses", upstream=FIG4_JOINT, folder="ablations/fig4",
            overrides=("--model.init_args.modality_loss_weight=1.0",),
        ),
        StageSpec(
            "joint_text", "joint_text", "joint text I+II+III", upstream={"stage1_audio_checkpoint": "stage1_audio"},
            encoder="text", encoder_arg="text_encoder", folder="ablations/fig4",
        ),
    ),
    paper={},
    # as Table 1's generated runs; the joint runs get Stage III's epochs, the text fine-tuning Stage I text's
    generated_overrides={
        **TABLE1.generated_overrides,
        "joint": TABLE1.generated_overrides["stage3"],
        "joint_deep": TABLE1.generated_overrides["stage3"],
        "joint_text": TABLE1.generated_overrides["stage1_text"],
    },
)

OOF_FOLDS = 5  # K for the corpora; the generated runs use 2 (a tenth of the training conversations is too few)

OOF = TableSpec(
    name="oof",
    title="Stacking overfit: the hierarchy on in-sample vs out-of-fold Stage I embeddings, test weighted F1",
    corpora=TABLE1.corpora,
    stages=(
        *TABLE1.stages,
        StageSpec("oof_text", "stage1_text", "out-of-fold text I", upstream={"full": "stage1_text"}, encoder="text",
                  kind="oof", overrides=(f"--folds={OOF_FOLDS}",)),
        StageSpec("oof_audio", "stage1_audio", "out-of-fold speech I", upstream={"full": "stage1_audio"}, encoder="speech",
                  kind="oof", overrides=(f"--folds={OOF_FOLDS}",)),
        StageSpec("stage2_text_oof", "stage2_text", "text II, out-of-fold I",
                  upstream={"stage1_checkpoint": "stage1_text", "stage1_oof": "oof_text[oof]"}),
        StageSpec("stage2_audio_oof", "stage2_audio", "speech II, out-of-fold I",
                  upstream={"stage1_checkpoint": "stage1_audio", "stage1_oof": "oof_audio[oof]"}),
        StageSpec("stage3_oof", "stage3", "Stage III, out-of-fold I",
                  upstream={"stage2_text_checkpoint": "stage2_text_oof", "stage2_audio_checkpoint": "stage2_audio_oof"}),
    ),  # fmt: skip
    paper={},
    generated_overrides={
        **TABLE1.generated_overrides,
        "oof_text": (*TABLE1.generated_overrides["stage1_text"], "--folds=2"),
        "oof_audio": (*TABLE1.generated_overrides["stage1_audio"], "--folds=2"),
        "stage2_text_oof": TABLE1.generated_overrides["stage2_text"],
        "stage2_audio_oof": TABLE1.generated_overrides["stage2_audio"],
        "stage3_oof": TABLE1.generated_overrides["stage3"],
    },
)

TABLES: dict[str, TableSpec] = {t.name: t for t in (TABLE1, FIG4, OOF)}
