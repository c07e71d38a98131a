"""A worker process: ``python -m sipdisp.workers -c FILE`` runs the sipdisp
twistd plugin in the foreground without a pid file (the supervisor owns the
pid file); ``SIPDISP_WORKER`` names the worker."""

import sys


def main(argv=None):
    """Run ``twistd -n --pidfile= sipdisp ARGS``."""
    from twisted.scripts.twistd import run
    args = sys.argv[1:] if argv is None else argv
    sys.argv = ["twistd", "-n", "--pidfile=", "sipdisp", *args]
    run()


if __name__ == "__main__":
    main()
