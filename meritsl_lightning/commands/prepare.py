"""`meritsl prepare CORPUS --root DIR --out DIR`: a corpus as distributed -> manifest.jsonl + report.json."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_modules.cmu_mosi_parser import PROTOCOLS as CMU_MOSI_PROTOCOLS
from data_modules.cmu_mosi_parser import parse_cmu_mosi
from data_modules.iemocap_parser import PROTOCOLS as IEMOCAP_PROTOCOLS
from data_modules.iemocap_parser import parse_iemocap
from data_modules.manifest import CorpusProblem, ParseResult, build_report, write_manifest
from data_modules.meld_parser import PROTOCOLS as MELD_PROTOCOLS
from data_modules.meld_parser import parse_meld
from data_modules.msp_podcast_parser import PROTOCOLS as MSP_PODCAST_PROTOCOLS
from data_modules.msp_podcast_parser import parse_msp_podcast

MANIFEST_NAME = "manifest.jsonl"
REPORT_NAME = "report.json"
EXIT_FATAL = 2
_MAX_DEFECTS_SHOWN = 5


@dataclass(frozen=True)
class CorpusEntry:
    """A preparable corpus: its parser `parse(root, protocol=, on_error=, deep=, text_only=) -> ParseResult`."""

    parse: Callable[..., ParseResult]
    protocols: tuple[str, ...]
    default_protocol: str
    help: str


CORPORA: dict[str, CorpusEntry] = {
    "iemocap": CorpusEntry(
        parse=parse_iemocap,
        protocols=tuple(IEMOCAP_PROTOCOLS),
        default_protocol="iemocap4",
        help="IEMOCAP_full_release (Session1..Session5)",
    ),
    "meld": CorpusEntry(
        parse=parse_meld,
        protocols=tuple(MELD_PROTOCOLS),
        default_protocol="meld7",
        help="MELD.Raw (train/dev/test_sent_emo.csv + train_splits/, dev_splits_complete/, output_repeated_splits_test/)",
    ),
    "cmu_mosi": CorpusEntry(
        parse=parse_cmu_mosi,
        protocols=tuple(CMU_MOSI_PROTOCOLS),
        default_protocol="mosi2",
        help="CMU-MOSI raw archive (the folder holding Raw/: Audio/WAV_16000/Segmented, Transcript/Segmented, Labels)",
    ),
    "msp_podcast": CorpusEntry(
        parse=parse_msp_podcast,
        protocols=tuple(MSP_PODCAST_PROTOCOLS),
        default_protocol="msp_all",
        help="MSP-PODCAST-Publish-1.xx (Audios/, Labels/labels_consensus.csv or .json, optional Transcripts/, Partitions.txt)",
    ),
}


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add one sub-command per registered corpus, each with --root/--out/--protocol/--on-error/--deep."""
    corpora = parser.add_subparsers(dest="corpus", metavar="CORPUS", required=True)
    for name, entry in CORPORA.items():
        sub = corpora.add_parser(name, help=entry.help, description=f"Prepare {name}: {entry.help}.")
        sub.add_argument("--root", type=Path, required=True, help="the corpus folder as distributed")
        sub.add_argument(
            "--out", type=Path, required=True, help=f"output folder for {MANIFEST_NAME} and {REPORT_NAME}"
        )
        sub.add_argument(
            "--protocol", choices=entry.protocols, default=entry.default_protocol, help="label protocol"
        )
        sub.add_argument(
            "--on-error",
            choices=("fail", "skip"),
            default="fail",
            help="stop at the first bad item (fail) or leave bad items out and list them in the report (skip)",
        )
        sub.add_argument(
            "--deep", action="store_true", help="decode every audio file fully (default: header check)"
        )
        sub.add_argument(
            "--text-only",
            action="store_true",
            help="transcripts and labels only; media are not needed (speech stages refuse such a manifest)",
        )
    parser.set_defaults(func=run_prepare)
    return parser


def add_prepare_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `prepare` on the sub-parsers of the main CLI; `args.func(args)` then runs it."""
    parser = subparsers.add_parser(
        "prepare",
        help="parse a corpus into a manifest and a report",
        description="Parse a corpus as distributed into OUT/manifest.jsonl and OUT/report.json.",
    )
    return configure_parser(parser)


def _write_json(obj: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _summary(report: dict[str, Any]) -> list[str]:
    splits = report["splits"]
    total = sum(s["utterances"] for s in splits.values())
    lines = [f"{report['corpus']} ({report['protocol']}): {total} utterances"]
    for split, s in splits.items():
        labels = " ".join(f"{k}={v}" for k, v in s["labels"].items())
        unlabelled = f" ({s['unlabelled']} unlabelled)" if s.get("unlabelled") else ""
        lines.append(
            f"  {split:<10} {s['utterances']:>6} utterances {s['conversations']:>4} conversations  {labels}{unlabelled}"
        )
    unlabelled_turns = (report.get("unlabelled_turns") or {}).get("count")
    if unlabelled_turns:
        lines.append(f"  unlabelled turns (context only, not in the labelled counts): {unlabelled_turns}")
    excluded = report.get("excluded_by_protocol")
    if excluded:
        lines.append("  excluded by protocol: " + " ".join(f"{k}={v}" for k, v in excluded.items()))
    defects = report["defects"]
    lines.append(f"  defects (items skipped): {len(defects)}")
    for d in defects[:_MAX_DEFECTS_SHOWN]:
        where = f"{d['file']}:{d['line']}" if "line" in d else d["file"]
        lines.append(f"    {d['item']}: {d['problem']} [{where}]")
    if len(defects) > _MAX_DEFECTS_SHOWN:
        lines.append(f"    ... {len(defects) - _MAX_DEFECTS_SHOWN} more in {REPORT_NAME}")
    return lines


def _fatal(message: str) -> int:
    print(f"meritsl prepare: error: {message}", file=sys.stderr)
    return EXIT_FATAL


def run_prepare(args: argparse.Namespace) -> int:
    """Parse, write OUT/manifest.jsonl and OUT/report.json, print a summary; 0, or 2 on a fatal problem."""
    entry = CORPORA[args.corpus]
    try:
        result = entry.parse(
            args.root, protocol=args.protocol, on_error=args.on_error, deep=args.deep, text_only=args.text_only
        )
    except CorpusProblem as e:
        return _fatal(f"{e}\n(use --on-error skip to leave such items out and list them in {REPORT_NAME})")
    except (OSError, ValueError) as e:
        return _fatal(str(e))
    out = Path(args.out)
    report = build_report(
        args.corpus,
        args.protocol,
        result.utterances,
        result.defects,
        on_error=args.on_error,
        manifest=MANIFEST_NAME,
        **result.info,
    )
    report.setdefault("warnings", [])
    try:
        out.mkdir(parents=True, exist_ok=True)
        _write_json(report, out / REPORT_NAME)
        if not result.utterances:
            return _fatal(
                f"no utterances left from {args.root}; the {len(result.defects)} defects are in {out / REPORT_NAME}"
            )
        write_manifest(result.utterances, out / MANIFEST_NAME)
    except OSError as e:
        return _fatal(f"cannot write to {out}: {e}")
    print("\n".join(_summary(report)))
    for warning in report["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {out / MANIFEST_NAME} and {out / REPORT_NAME}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m meritsl_lightning.commands.prepare CORPUS --root DIR --out DIR [...]`."""
    parser = configure_parser(argparse.ArgumentParser(prog="meritsl prepare", description=__doc__))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
