"""The secrets helper: bearer tokens and bcrypt password lines, never plain text."""

import hashlib
import io

import bcrypt
import pytest

from sipdisp.console import credentials
from sipdisp.console.manhole import HashedPasswordChecker


def test_new_token_comes_with_its_sha256():
    """A new token is long, random, and paired with its hex SHA-256."""
    token, digest = credentials.new_token()
    assert len(token) >= 40
    assert digest == hashlib.sha256(token.encode()).hexdigest()
    assert credentials.new_token()[0] != token


def test_password_line_is_a_bcrypt_hash_the_console_accepts(tmp_path):
    """The printed line holds a bcrypt hash (not the password) that the checker reads."""
    line = credentials.password_line("admin", "s3cret", rounds=4)
    user, digest = line.split(":", 1)
    assert user == "admin" and "s3cret" not in line
    assert bcrypt.checkpw(b"s3cret", digest.encode())
    path = tmp_path / "passwords"
    path.write_text(line + "\n")
    assert set(HashedPasswordChecker(str(path)).hashes()) == {b"admin"}


@pytest.mark.parametrize("user", ["", "a:b", "a b"])
def test_bad_user_names_are_refused(user):
    """User names that would break the file format are refused."""
    with pytest.raises(ValueError):
        credentials.password_line(user, "x", rounds=4)


def test_main_prints_the_config_line_for_a_token():
    """``token`` prints the token and the http.token_sha256 line."""
    out = io.StringIO()
    assert credentials.main(["token"], out=out) == 0
    assert "token_sha256: \"" in out.getvalue()


def test_main_asks_twice_and_refuses_a_mismatch():
    """``password USER`` prints nothing when the two entries differ."""
    answers = iter(["one", "two"])
    out = io.StringIO()
    assert credentials.main(["password", "admin"], ask=lambda prompt: next(answers), out=out) == 1
    assert out.getvalue() == ""


def test_unknown_usage_exits_2():
    """Anything else prints the usage and exits 2."""
    assert credentials.main(["frobnicate"], out=io.StringIO()) == 2
