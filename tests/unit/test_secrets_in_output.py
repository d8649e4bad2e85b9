"""No secret in anything wxassist prints or logs. The CLI runs in processes of its own, with
every secret set (WeChat token, AES key, app secret, S3 keys) and logging at DEBUG, through
help, failures and refusals; a push fetches an access token and sends at DEBUG, the path where
HTTP clients would log the app secret in a URL. Every line they write is scanned. (The
running application's logs and traces are scanned in tests/serve/test_observability.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.net import free_port

REPO = Path(__file__).resolve().parents[2]
WXASSIST = Path(sys.executable).parent / "wxassist"
SECRETS = {
    "token": "tokSCANa91f3c", "AES key": "SCANaeskey0123456789abcdefghijklmnopqrstuvw",
    "app secret": "appSECRETscan7e21", "S3 access key": "AKIASCANSECRET0001", "S3 secret key": "s3SECRETscanKz81q",
}
APPID = "wx5ca9000000000001"


def secret_env(home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "WXA_HOME": str(home), "WXA_LOG_LEVEL": "DEBUG", "WXA_WECHAT_APPID": APPID,
            "WXA_WECHAT_TOKEN": SECRETS["token"], "WXA_WECHAT_AES_KEY": SECRETS["AES key"],
            "WXA_WECHAT_SECRET": SECRETS["app secret"], "WXA_S3_ACCESS_KEY": SECRETS["S3 access key"],
            "WXA_S3_SECRET_KEY": SECRETS["S3 secret key"], **extra}


def assert_no_secret(output: str, what: str) -> None:
    for name, secret in SECRETS.items():
        assert secret not in output, f"the {name} appears in what {what} wrote"


CLI_RUNS = {
    "help": ([], {}, 0),
    "model store unreachable": (["model", "ls"], {"WXA_MODEL_STORE": "minio://models/wxassist", "AWS_MAX_ATTEMPTS": "1",
                                                  "WXA_S3_ENDPOINT": f"http://127.0.0.1:{free_port()}"}, 2),
    "config file missing": (["up", "--config", "no-such-serve-config.yaml"], {}, 2),
    "production refusal": (["up"], {"WXA_ENVIRONMENT": "production", "WXA_WECHAT_API_BASE": "http://127.0.0.1:9"}, 2),
    "invalid AES key": (["up"], {"WXA_ENVIRONMENT": "production", "WXA_WECHAT_AES_KEY": "bad-" + SECRETS["AES key"][:30]}, 2),
}


@pytest.mark.parametrize("name", list(CLI_RUNS))
def test_the_cli_never_prints_a_secret(tmp_path, name):
    args, extra, exit_code = CLI_RUNS[name]
    env = secret_env(tmp_path, **extra)
    run = subprocess.run([str(WXASSIST), *args, *([] if args else ["--help"])], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=120)
    output = run.stdout + run.stderr
    assert run.returncode == exit_code and output.strip(), output[-2000:]  # it said something: the scan means something
    assert_no_secret(output, f"wxassist {' '.join(args) or '--help'}")
    if "WXA_WECHAT_AES_KEY" in extra:  # the bad key is a secret too
        assert extra["WXA_WECHAT_AES_KEY"] not in output


PUSH_AT_DEBUG = """
import os
from functions.emulator.emulator import WeChatEmulator, emulator_app
from functions.emulator.platform_api import BackgroundServer
from functions.common.settings import load_settings
from functions.common.state import SQLiteStateStore
from functions.push.wechat_api import WeChatSender
from observability.logs import configure_logging
from tests.net import free_port

configure_logging("DEBUG")
settings = load_settings()
accounts = settings.account_map()
emulator = WeChatEmulator(accounts, "http://127.0.0.1:9")
with BackgroundServer(emulator_app(emulator), free_port()) as platform:
    store = SQLiteStateStore(settings.home_dir() / "state.db")
    emulator.api.user_wrote(accounts["default"].appid, "o-user")  # inside the 48-hour window
    WeChatSender(accounts, store, platform.url).send_text("default", "o-user", "七天无理由退货")
    print("pushed:", emulator.api.received("o-user"))
"""


def test_a_push_at_debug_logs_neither_the_app_secret_nor_the_access_token(tmp_path):
    run = subprocess.run([sys.executable, "-c", PUSH_AT_DEBUG], capture_output=True, text=True, cwd=REPO,
                         env={**secret_env(tmp_path), "PYTHONPATH": str(REPO)}, timeout=120)
    output = run.stdout + run.stderr
    assert run.returncode == 0 and "七天无理由退货" in output, output[-2000:]
    assert_no_secret(output, "a push at DEBUG")
    access_tokens = [line for line in output.splitlines() if "access_token=" in line]
    assert access_tokens == [], access_tokens
