"""``wxassist trace MSGID``: one message's span trees from the local trace files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from observability.span_files import message_spans, render_tree


def cmd_trace(opts: argparse.Namespace) -> int:
    from functions.common.settings import load_settings

    trace_dir = Path(opts.dir) if opts.dir else load_settings().trace_dir_path()
    spans = message_spans(trace_dir, opts.msg_id)
    if opts.json:
        keys = ("name", "trace_id", "span_id", "parent_id", "start", "duration_ms", "attributes", "links", "function")
        print(json.dumps({"spans": [{key: span.get(key) for key in keys} for span in spans]}, ensure_ascii=False))
        return 0 if spans else 1
    if not spans:
        print(f"no spans for MsgId {opts.msg_id} in {trace_dir}", file=sys.stderr)
        return 1
    print(render_tree(spans))
    return 0


def register_trace_command(commands) -> None:
    trace = commands.add_parser("trace", help="one message's span tree from the local trace files")
    trace.add_argument("msg_id", metavar="MSGID", help="the message's MsgId (events: event:<CreateTime>)")
    trace.add_argument("--dir", help="trace directory (default: WXA_TRACE_DIR, else $WXA_HOME/traces)")
    trace.add_argument("--json", action="store_true",
                       help='{"spans": [{"name", "span_id", "parent_id", "start", "duration_ms", "attributes"}, …]}')
    trace.set_defaults(handler=cmd_trace)
