"""The API's settings, as an operator of the platform sets them."""

from __future__ import annotations

from tenantry.api.settings import ApiSettings


def test_tokens_mounted_from_files_lose_their_trailing_newline() -> None:
    token = "a" * 40
    settings = ApiSettings(admin_token=f"{token}\n", introspection_token=f"  {token}\r\n")
    assert settings.admin_token.get_secret_value() == token
    assert settings.introspection_token.get_secret_value() == token
    settings.refuse_placeholders()  # long enough once stripped: accepted
