"""Command-line entry of the training tools: detectron2's ``launch`` plus clean user errors."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from detectron2.engine import launch

from vitdet.config import one_line

__all__ = ["launch_main"]


def launch_main(
    main: Callable[[argparse.Namespace], None],
    args: argparse.Namespace,
    *,
    prog: str,
    user_errors: tuple[type[Exception], ...],
) -> int:
    """Run ``main(args)`` in ``args.num_gpus`` processes per machine (detectron2's
    ``default_argument_parser`` flags); in a single process, ``user_errors`` (a bad config,
    a bad dataset) become one line on stderr and exit status 2, without a traceback."""
    try:
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except user_errors as e:
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return 2
    return 0
