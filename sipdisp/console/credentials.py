"""Make the management secrets without ever writing a plain password to a file::

    python -m sipdisp.console.credentials token
        prints a new random bearer token (give it to sipdisp-ctl as
        SIPDISP_TOKEN) and the http.token_sha256 line for the config.

    python -m sipdisp.console.credentials password USER
        asks for a password twice and prints the ``USER:$2b$...`` line for
        console.password_file.
"""

import getpass
import hashlib
import secrets
import sys


def new_token():
    """A random bearer token and its SHA-256 (hex), as ``(token, digest)``."""
    token = secrets.token_urlsafe(32)
    return token, hashlib.sha256(token.encode("ascii")).hexdigest()


def password_line(user, password, rounds=12):
    """The ``user:bcrypt-hash`` line of a console password file."""
    import bcrypt

    if not user or ":" in user or any(c.isspace() for c in user):
        raise ValueError("the user name must be non-empty, without ':' or spaces")
    digest = bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(rounds))
    return f"{user}:{digest.decode('ascii')}"


def main(argv=None, ask=getpass.getpass, out=None):
    """Entry point; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    out = out or sys.stdout
    if argv == ["token"]:
        token, digest = new_token()
        out.write(f"token (keep it secret; for sipdisp-ctl --token or SIPDISP_TOKEN):\n  {token}\n"
                  f"config (etc/sipdisp.yaml):\n  http:\n    token_sha256: \"{digest}\"\n")
        return 0
    if len(argv) == 2 and argv[0] == "password":
        first = ask(f"password for {argv[1]}: ")
        if not first or ask("again: ") != first:
            sys.stderr.write("passwords empty or different; nothing written\n")
            return 1
        out.write(password_line(argv[1], first) + "\n")
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
