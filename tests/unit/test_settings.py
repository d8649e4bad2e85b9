from __future__ import annotations

import stat

import pytest

from functions.common.errors import ConfigurationError
from functions.common.settings import AccountConfig, Settings, ensure_dev_credentials, load_settings

AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


def test_secrets_never_print():
    settings = Settings(wechat_token="tok-SECRET-1", wechat_aes_key=AES_KEY, wechat_appid="wx1", wechat_secret="app-SECRET-2")
    account = settings.default_account()
    for rendered in (repr(settings), str(settings), repr(account), str(account), settings.model_dump_json()):
        assert "tok-SECRET-1" not in rendered and AES_KEY not in rendered and "app-SECRET-2" not in rendered


def test_a_bad_aes_key_is_a_configuration_error_without_the_key():
    bad_key = "short-secret-key-value"
    with pytest.raises(ConfigurationError) as caught:
        AccountConfig(name="x", token="t", aes_key=bad_key, appid="wx1")
    assert bad_key not in str(caught.value)


def test_invalid_settings_name_the_field_not_the_value(tmp_path):
    with pytest.raises(ConfigurationError) as caught:
        load_settings(max_body_bytes="lots-of-bytes")
    assert "max_body_bytes" in str(caught.value) and "lots-of-bytes" not in str(caught.value)


def test_secrets_and_unknown_names_cannot_come_as_arguments():
    with pytest.raises(ConfigurationError, match="secrets"):
        load_settings(wechat_token="t")
    with pytest.raises(ConfigurationError, match="unknown"):
        load_settings(no_such_setting=1)


def test_dev_credentials_are_generated_once_and_owner_only(tmp_path):
    first, generated = ensure_dev_credentials(tmp_path)
    again, generated_again = ensure_dev_credentials(tmp_path)
    assert generated and not generated_again and first == again
    assert stat.S_IMODE((tmp_path / "dev-credentials.json").stat().st_mode) == 0o600
    account = Settings(home=tmp_path).account_map()["default"]
    assert len(account.aes_key_bytes()) == 32 and account.appid.startswith("wx")


def test_environment_credentials_win_over_dev_credentials(tmp_path):
    ensure_dev_credentials(tmp_path)
    settings = Settings(home=tmp_path, wechat_token="t", wechat_aes_key=AES_KEY, wechat_appid="wx-env")
    assert settings.account_map()["default"].appid == "wx-env"
    with pytest.raises(ConfigurationError, match="APPID"):
        Settings(home=tmp_path, wechat_token="t").account_map()


def test_the_delivery_strategy_comes_from_the_environment_for_the_default_account(tmp_path, monkeypatch):
    ensure_dev_credentials(tmp_path)
    assert Settings(home=tmp_path).account_map()["default"].strategy == "passive-then-push"
    monkeypatch.setenv("WXA_WECHAT_STRATEGY", "passive-only")
    assert Settings(home=tmp_path).account_map()["default"].strategy == "passive-only"
    monkeypatch.setenv("WXA_WECHAT_STRATEGY", "push-only")
    with pytest.raises(ConfigurationError, match="wechat_strategy"):
        load_settings(home=str(tmp_path))


def test_continue_keyword_and_hint_are_checked():
    with pytest.raises(ConfigurationError, match="continue_keyword"):
        load_settings(continue_keyword="。。")
    with pytest.raises(ConfigurationError, match="continue_hint_text"):
        load_settings(continue_hint_text="长" * 100)


PRODUCTION_ACCOUNT = {"WXA_WECHAT_TOKEN": "prod-token", "WXA_WECHAT_AES_KEY": AES_KEY, "WXA_WECHAT_APPID": "wx1234567890abcdef"}


def production_env(monkeypatch, tmp_path, **env: str) -> None:
    monkeypatch.setenv("WXA_HOME", str(tmp_path))
    monkeypatch.setenv("WXA_ENVIRONMENT", "production")
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def test_production_refuses_the_development_credentials(tmp_path, monkeypatch):
    ensure_dev_credentials(tmp_path)
    production_env(monkeypatch, tmp_path)
    with pytest.raises(ConfigurationError, match="refusing to run in production: .*development credentials"):
        load_settings()


@pytest.mark.parametrize(("env", "complaint"), [
    ({}, "no WeChat account is configured"),
    ({**PRODUCTION_ACCOUNT, "WXA_WECHAT_API_BASE": "http://127.0.0.1:8001"}, "the emulator"),
    ({**PRODUCTION_ACCOUNT, "WXA_S3_ACCESS_KEY": "minioadmin"}, "MinIO's default"),
])
def test_production_refuses_what_only_development_may_use(tmp_path, monkeypatch, env, complaint):
    production_env(monkeypatch, tmp_path, **env)
    with pytest.raises(ConfigurationError, match=complaint):
        load_settings()


def test_production_runs_on_real_credentials_and_never_generates_development_ones(tmp_path, monkeypatch):
    production_env(monkeypatch, tmp_path, **PRODUCTION_ACCOUNT)
    settings = load_settings()
    assert settings.production_problems() == [] and not settings.default_account().development


def test_wxassist_up_in_production_without_an_account_stops_before_making_development_credentials(
        tmp_path, monkeypatch, capsys):
    from functions.cli.main import main

    production_env(monkeypatch, tmp_path)
    assert main(["up"]) == 2
    assert "no WeChat account is configured" in capsys.readouterr().err
    assert not (tmp_path / "dev-credentials.json").exists()
