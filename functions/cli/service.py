"""``wxassist up``, ``emulate`` and ``chat``: the service on one machine, the WeChat
emulator beside it, and a WeChat user talking to it."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from functions.common.errors import WxAssistError
from functions.common.settings import load_settings
from functions.cli.kb import ensure_sample_knowledge
from serve_app import APP_NAME, DEFAULT_SERVE_CONFIG, compose_app, read_serve_config

DEFAULT_EMULATOR_URL = "http://127.0.0.1:8001"

THROUGHPUT_FLAGS = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"}
# Direct ingress drains an ingress replica for 30 s before it stops, so a load balancer can
# deregister it; one machine has none, and Ctrl-C took a minute. Clusters set their own.
# Ray starts its workers at nice 15, below anything else on the machine: beside one busy
# process at normal priority (a build, a backup) every replica got a few percent of a core and
# every WeChat delivery timed out (wxassist bench burst beside stress-ng: 200 of 200). The
# replicas are the service's request path, so they run at normal priority.
ONE_MACHINE_SERVE_ENV = {**THROUGHPUT_FLAGS, "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
                         "RAY_worker_niceness": "0"}



def apply_one_machine_serve_env() -> None:
    """Before Ray starts (its processes read these once): what one machine runs best with,
    unless the environment already says otherwise."""
    for name, value in ONE_MACHINE_SERVE_ENV.items():
        os.environ.setdefault(name, value)


def _cmd_up(opts: argparse.Namespace) -> int:
    from functions.common.settings import ensure_dev_credentials

    settings = load_settings()
    home = settings.home_dir()
    os.environ["WXA_HOME"] = str(home)  # replicas inherit the driver's environment
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Serve's throughput-optimized mode and its haproxy proxy: `wxassist bench pipeline`
    # measured 1.6x the messages/s of Serve's defaults on 2 cores. Set either to 0 to opt out.
    apply_one_machine_serve_env()
    dev_credentials = None
    if settings.wechat_token is None and settings.environment == "development":
        dev_credentials, generated = ensure_dev_credentials(home)
        print(f"{'Generated' if generated else 'Using'} development credentials in {home}/dev-credentials.json")
    # A bad config file is refused before any model or knowledge base work.
    http_options, app_args, deployment_options = read_serve_config(Path(opts.config))
    ensure_model(settings)
    ensure_sample_knowledge(settings)

    host = opts.host or http_options.get("host", "127.0.0.1")
    port = opts.port or http_options.get("port", 8000)
    base_url = f"http://{host}:{port}"
    emulator = None
    if dev_credentials is not None and "WXA_WECHAT_API_BASE" not in os.environ:
        # Development: WeChat is the emulator, so pushed answers land somewhere you can see.
        emulator = _start_emulator(settings, base_url, opts.emulator_port or port + 1)
        os.environ["WXA_WECHAT_API_BASE"] = emulator.url
    import ray
    from ray import serve

    # Ctrl-C signals the terminal's whole process group. Ray's own processes (GCS, raylet,
    # workers) would die at once, and the shutdown below could then not reach them: Serve's
    # haproxy was left running, holding the port. They start ignoring SIGINT (an ignored
    # signal is inherited), so only this process hears Ctrl-C and stops them in order.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        ray.init(include_dashboard=False, logging_level="WARNING")
        serve.start(http_options={"host": host, "port": port})
    finally:
        signal.signal(signal.SIGINT, previous)
    app = compose_app({**app_args, "home": str(home)}, deployment_options)
    serve.run(app, name=APP_NAME, route_prefix="/", logging_config={"log_level": opts.log_level})
    print(f"\nwxassist is up. Callback URL: {base_url}/wechat/default")
    if emulator is not None:
        print(f"WeChat emulator (callbacks and the customer-service API): {emulator.url}")
    if dev_credentials is not None:
        # Secrets stay in the owner-only file: terminal output ends up in scrollback and CI logs.
        print(f"Development account: appid {dev_credentials['appid']}; token and EncodingAESKey in "
              f"{home}/dev-credentials.json (owner-only)")
    else:
        account = settings.default_account()
        print(f"Account 'default': appid {account.appid if account else '?'} (token and key from WXA_WECHAT_*)")
    chat_hint = f" --emulator {emulator.url}" if emulator is not None and emulator.url != DEFAULT_EMULATOR_URL else ""
    print(f'Try it from another shell: wxassist chat "你们的退货政策是什么？"{chat_hint}\nCtrl-C stops.')
    # Supervisors (systemd, Kubernetes, `kill`) stop with SIGTERM, and a shell's background
    # job ignores SIGINT: both must shut Serve and Ray down, not orphan their processes.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nStopping wxassist…")
    finally:
        serve.shutdown()
        ray.shutdown()
        if emulator is not None:
            emulator.__exit__(None, None, None)
    return 0


def _start_emulator(settings, callback_base: str, port: int):
    from functions.emulator.emulator import WeChatEmulator, emulator_app
    from functions.emulator.platform_api import BackgroundServer

    emulator = WeChatEmulator(settings.account_map(), callback_base)
    return BackgroundServer(emulator_app(emulator), port).__enter__()


def _cmd_emulate(opts: argparse.Namespace) -> int:
    import uvicorn

    from functions.emulator.emulator import WeChatEmulator, emulator_app

    settings = load_settings()
    if not settings.account_map():
        raise WxAssistError("no account configured: start `wxassist up` once, or set WXA_WECHAT_*")
    app = emulator_app(WeChatEmulator(settings.account_map(), opts.target))
    print(f"WeChat emulator on http://127.0.0.1:{opts.port}, delivering to {opts.target}; point "
          f"WXA_WECHAT_API_BASE at it so the service pushes here.")
    uvicorn.run(app, host="127.0.0.1", port=opts.port, log_level="warning")
    return 0


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def ensure_model(settings) -> None:
    if settings.model:
        return  # a store version is restored by the replicas themselves
    from functions.generate.gguf_import import ensure_demo_model

    if not (settings.model_dir() / "model.safetensors").is_file():
        print(f"Converting the bundled demo model into {settings.model_dir()} (once, ~30 s)…")
    ensure_demo_model(settings.model_dir())


def _cmd_chat(opts: argparse.Namespace) -> int:
    """Be a WeChat user: the emulator delivers the message as the platform would and
    collects what the user receives, passively or pushed."""
    import httpx

    request = {"user": opts.user, "text": opts.text, "account": opts.account, "safe_mode": not opts.plain}
    try:
        response = httpx.post(f"{opts.emulator.rstrip('/')}/_emulator/messages", json=request, timeout=120)
    except httpx.HTTPError as exc:
        raise WxAssistError(
            f"cannot reach the WeChat emulator at {opts.emulator} ({type(exc).__name__}): `wxassist up` starts it "
            "in development, `wxassist emulate` on its own"
        ) from exc
    result = response.json()
    if "error" in result:
        raise WxAssistError(result["error"])
    if opts.json:
        print(json.dumps(result, ensure_ascii=False))
        return 0
    if result["outcome"] == "failed":
        raise WxAssistError(f"no delivery was answered ({', '.join(result['statuses'])}): is the service running?")
    for message in result["received"]:
        prefix = "" if message["channel"] == "passive" else "[客服消息] "
        print(prefix + message["text"])
    if not result["received"]:
        print("(no reply)")
    print(f"(MsgId {result['msg_id']}: `wxassist trace {result['msg_id']}` shows where its time went)", file=sys.stderr)
    return 0


def register_service_commands(commands) -> None:
    up = commands.add_parser("up", help="start Ray and Serve locally and serve the callback URL")
    up.add_argument("--port", type=int, help="HTTP port (default: the Serve config's, 8000)")
    up.add_argument("--host", help="HTTP host (default: the Serve config's, 127.0.0.1)")
    up.add_argument("--config", default=str(DEFAULT_SERVE_CONFIG), help="Serve config file (default: deploy/local.yaml)")
    up.add_argument("--log-level", default="WARNING", help="Serve and replica log level (default: WARNING)")
    up.add_argument("--emulator-port", type=int, help="the development WeChat emulator's port (default: port + 1)")

    emulate = commands.add_parser("emulate", help="run the WeChat emulator: callbacks out, customer-service API in")
    emulate.add_argument("--port", type=int, default=8001)
    emulate.add_argument("--target", default="http://127.0.0.1:8000", help="the service's base URL")
    emulate.set_defaults(handler=_cmd_emulate)
    up.set_defaults(handler=_cmd_up)

    chat = commands.add_parser(
        "chat", help="send one message as WeChat would (5 s per delivery, up to 3 deliveries) and print the reply"
    )
    chat.add_argument("text")
    chat.add_argument("--user", default="wxassist-chat-user", help="the FromUserName (openid) to send as")
    chat.add_argument("--account", default="default")
    chat.add_argument("--emulator", default=DEFAULT_EMULATOR_URL, help="the WeChat emulator (started by `wxassist up`)")
    chat.add_argument("--plain", action="store_true", help="deliver in plain mode (unencrypted)")
    chat.add_argument("--json", action="store_true")
    chat.set_defaults(handler=_cmd_chat)
