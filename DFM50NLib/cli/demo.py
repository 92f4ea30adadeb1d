"""`demo`: generate the bundled phantom case and score it end to end — the first thing to run."""

from __future__ import annotations

from pathlib import Path

from DFM50NLib.cli.common import add_model_arguments


def register(sub):
    p = sub.add_parser(
        "demo",
        help="score the bundled demo phantom (first run)",
        description="Write a small synthetic chest-CT phantom with one lesion, score it with FCIB + the bundled "
        "DEMO forest, and write the result, the audit cubes and a report. Needs the FCIB weights: "
        "add --download on first use (738 MB, cached) or give --weights PATH.",
    )
    add_model_arguments(p)
    p.add_argument("--out", default="demo-output", help="output folder (default ./demo-output)")
    p.add_argument("--no-report", action="store_true", help="skip the HTML/PDF report")
    p.set_defaults(func=run_demo)


def run_demo(args) -> int:
    from DFM50NLib.cli.common import check_output_dir
    from DFM50NLib.cli.score import format_result
    from DFM50NLib.io.demo_case import write_demo_case
    from DFM50NLib.model.encoder_process import one_shot_encoder
    from DFM50NLib.scoring.pipeline import score_case

    check_output_dir(args.out)
    out = Path(args.out)
    with one_shot_encoder(args.weights, args.device) as encoder:  # loads while the phantom is made and read
        ct_path, mask_path = write_demo_case(out / "demo_case")
        print(f"demo phantom written to {ct_path.parent}")
        result = score_case(
            ct_path,
            mask_path,
            case_id="demo_phantom",
            weights=args.weights,
            model=args.model,
            device=args.device,
            download=args.download,
            encoder=encoder,
            out_dir=out,
            write_cubes=True,
            report=not args.no_report,
        )
    print(format_result(result))
    print(f"results written to {out.resolve()}")
    return 0
