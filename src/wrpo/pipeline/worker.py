"""The one process entry point of a stage, under whatever launcher and executor:

    python -m wrpo.pipeline.worker STAGE.json              the stage (under `accelerate launch`: a process of it)
    python -m wrpo.pipeline.worker STAGE.json --shard I/N  the I-th of N shards of a sampling or scoring stage
    python -m wrpo.pipeline.worker STAGE.json --merge      the shards' rows joined into the stage's output

STAGE.json is the planned stage (wrpo.pipeline.kinds.Stage), written by the executor. The worker marks the
stage started (its first step) and finished (its last) from that file alone: nothing is planned again. The
local executor runs a one-process stage through run_part() in its own process instead.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import sys
import time
from pathlib import Path

import yaml

from wrpo.data.resumable import merge_jsonl, model_prompt_key, parse_shard
from wrpo.errors import InputError
from wrpo.files import write_text_atomically
from wrpo.pipeline.kinds import KINDS, Stage
from wrpo.pipeline.state import mark_finished, mark_started
from wrpo.progress import configure_console, console, is_main_process, is_verbose
from wrpo.stop_request import STOPPED_EXIT_STATUS, StopRequested


def write_stage_files(stage: Stage) -> Path:
    """The files the stage's processes read: the stage itself, and the accelerate config made for it."""
    layout = stage.layout
    if stage.placement.generated_config is not None:
        write_text_atomically(stage.placement.accelerate_config, yaml.safe_dump(stage.placement.generated_config))
    return write_text_atomically(layout.stage_file(stage.name), stage.model_dump_json(indent=1) + "\n")


def run_part(stage: Stage, shard: tuple[int, int] | None = None, merge: bool = False) -> None:
    """One process's part of the stage: all of it, one shard, or the merge of the shards."""
    kind, layout = KINDS[stage.kind], stage.layout
    output = stage.spec.output if stage.placement.shards > 1 else None
    parts = [layout.shard(output, index, stage.placement.shards) for index in range(stage.placement.shards)] \
        if output else []
    started = time.monotonic()
    if merge:
        done = f"wrote {merge_jsonl(parts, output, key=model_prompt_key)}"
    else:
        if is_main_process():
            mark_started(stage)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # launched: none starts before stale outputs are gone
            from accelerate import PartialState

            PartialState().wait_for_everyone()
        if shard is not None:
            done = kind.run(stage.spec.model_copy(update={"output": parts[shard[0]]}), shard)
        elif kind.placement == "shards":
            done = kind.run(stage.spec, (0, 1))
        else:
            done = kind.run(stage.spec)
    if not is_main_process():
        return
    if shard is None:
        mark_finished(stage)
    # To standard output, which is the stage's log (a summary table goes to the console as well).
    if isinstance(done, str):
        print(done)
    else:
        console.print(done)
    print(f"{stage.name}{f' shard {shard[0]}/{shard[1]}' if shard else ''}{' merge' if merge else ''}: "
          f"{time.monotonic() - started:.1f} s of work", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wrpo.pipeline.worker", description=__doc__.splitlines()[0])
    parser.add_argument("stage", type=Path, help="The stage file an executor wrote.")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--shard", help="I/N: the I-th of N shards.")
    which.add_argument("--merge", action="store_true", help="Join the shards' rows.")
    arguments = parser.parse_args(argv)
    # A process killed by a signal (an abort in a C++ library, a segfault) says where, in its log, each thread.
    faulthandler.enable()
    configure_console(verbose=is_verbose())
    try:
        stage = Stage.model_validate_json(arguments.stage.read_text())
        shard = parse_shard(arguments.shard) if arguments.shard else None
        run_part(stage, shard, arguments.merge)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except StopRequested as stopped:
        if is_main_process():
            print(f"{stage.name}: {stopped}; it resumes when run again", flush=True)
        return STOPPED_EXIT_STATUS
    return 0


if __name__ == "__main__":
    sys.exit(main())
