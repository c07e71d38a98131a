"""The busy lamp field fed by the proxy's own calls: the dialog table's
``early``, ``confirmed`` and ``ended`` callbacks become ``dialog`` event
publications (RFC 4235) for the caller's and the callee's AORs, as
OpenSIPS' pua_dialoginfo does, so a watcher of ``dialog`` for bob sees his
lamp go early -> confirmed -> terminated without any PUBLISH from a phone.

Each side of a call is one publication of its own (``source_id``
``"<dialog id>:caller"`` / ``":callee"``) on the presence server, through
``server.publish_internal(event, presentity, source_id, content_type,
body, expires, now)``. A side is published only when its AOR is in the
proxy's domains (``is_myself``): the caller's From URI as the
``initiator``, the callee's To URI (else the Request-URI) as the
``recipient``. When a dialog ends, its terminated state is published and
the publication is removed at once (expires 0), so the lamp goes dark.

Sans-IO: it reads no clock (the table's callbacks carry ``now``) and holds
no reference to a dialog, only its key and a version number, so it makes
no cycle and forgets a call when the call ends.
"""

from collections import Counter

from ..logs import Logger
from ..sip import SipParseError
from ..sip.uri import parse_uri
from .packages.dialoginfo import DIALOG_INFO, dialog_info

EVENT = "dialog"
CALLER = "caller"
CALLEE = "callee"
#: RFC 4235 ``direction`` of each side's dialog
DIRECTIONS = {CALLER: "initiator", CALLEE: "recipient"}
#: seconds a confirmed call's publication outlives the dialog timeout: the
#: table's own timeout ends the call (and the lamp) first
CONFIRMED_MARGIN = 60
#: expiry of the terminated publication, in case its removal never arrives
TERMINATED_EXPIRES = 30
#: ending reasons of the dialog table that RFC 4235 4.1.6.2 names; a failure
#: (CANCEL or a rejection) and a BYE say nothing of which side caused them
END_EVENTS = {"timeout": "timeout", "expire": "timeout"}


def aor_of(uri_text, is_myself):
    """``sip:user@host`` (lower-case host, no port or parameters) of
    ``uri_text`` when it has a user and names this proxy's domain; else None."""
    try:
        uri = parse_uri(uri_text)
    except (SipParseError, ValueError):
        return None
    if not uri.is_sip or not uri.user or not is_myself(uri):
        return None
    return f"sip:{uri.user}@{uri.host.lower()}"


class DialogFeed:
    """Publishes the ``dialog`` state of the calls in a
    :class:`~sipdisp.dialog.DialogTable` to the presence ``server``.

    ``is_myself`` (a URI -> bool, the core's) decides which AORs are ours;
    without it the table's core is asked. ``early_expires`` is the expiry
    of an early call's publication (default: the table's ``early_timeout``).
    """

    def __init__(self, server, dialogs=None, *, is_myself=None, early_expires=None,
                 log=None):
        self.server = server
        self.is_myself = is_myself
        self.early_expires = early_expires
        self.log = log or Logger(namespace="sipdisp.presence.dialogfeed")
        self.stats = Counter()
        #: dialog key -> version of the last body published for it
        self._versions = {}
        self._dialogs = None
        if dialogs is not None:
            self.attach(dialogs)

    def attach(self, dialogs):
        """Follow ``dialogs`` (once, however often it is called)."""
        self._dialogs = dialogs
        for kind, callback in (("early", self.on_early), ("confirmed", self.on_confirmed),
                               ("ended", self.on_ended)):
            if callback not in dialogs.callbacks[kind]:
                dialogs.callbacks[kind].append(callback)

    def detach(self):
        """Stop following the table."""
        dialogs, self._dialogs = self._dialogs, None
        if dialogs is None:
            return
        for kind, callback in (("early", self.on_early), ("confirmed", self.on_confirmed),
                               ("ended", self.on_ended)):
            if callback in dialogs.callbacks[kind]:
                dialogs.callbacks[kind].remove(callback)

    @property
    def lit(self):
        """How many calls have a lamp published."""
        return len(self._versions)

    # -- the table's callbacks ------------------------------------------------------
    def on_early(self, dlg, now):
        """First provisional reply with a To tag: both sides' lamps go early."""
        expires = self.early_expires
        if expires is None:
            expires = getattr(self._dialogs, "early_timeout", 300.0)
        self._publish(dlg, "early", int(expires), now)

    def on_confirmed(self, dlg, ctx, now):
        """2xx: both sides confirmed, for as long as the call may last."""
        self._publish(dlg, "confirmed", int(dlg.lifetime) + CONFIRMED_MARGIN, now)

    def on_ended(self, dlg, now):
        """The call ended: publish terminated, then remove the publication.
        A call that never lit a lamp (failed before any 18x) publishes
        nothing, unless it was confirmed before a restart (its publication
        came back from the database)."""
        if dlg.key not in self._versions and dlg.answered is None:
            return
        event = END_EVENTS.get(dlg.end_reason)
        self._publish(dlg, "terminated", TERMINATED_EXPIRES, now, event=event)
        self._publish(dlg, "terminated", 0, now, event=event)
        self._versions.pop(dlg.key, None)

    # -- publishing -------------------------------------------------------------------
    def sides(self, dlg):
        """``[(side, aor)]`` of the parties of ``dlg`` in our domains."""
        is_myself = self.is_myself
        if is_myself is None:
            core = getattr(self._dialogs, "core", None)
            if core is None:
                return []
            is_myself = core.is_myself
        out = []
        caller = aor_of(dlg.from_uri, is_myself)
        if caller is not None:
            out.append((CALLER, caller))
        callee = aor_of(dlg.to_uri, is_myself) or aor_of(dlg.req_uri, is_myself)
        if callee is not None:
            out.append((CALLEE, callee))
        return out

    def _publish(self, dlg, state, expires, now, event=None):
        sides = self.sides(dlg)
        if not sides:
            return
        version = self._versions.get(dlg.key, -1) + 1
        if expires:
            self._versions[dlg.key] = version
        for side, aor in sides:
            body = self.body(dlg, side, aor, state, version, event)
            try:
                self.server.publish_internal(EVENT, aor, f"{dlg.id}:{side}", DIALOG_INFO,
                                             body, expires, now)
            except Exception:
                self.stats["failed"] += 1
                self.log.failure("dialog {id}: publishing the {state} lamp of {aor} failed",
                                 id=dlg.id, state=state, aor=aor)
            else:
                self.stats["removed" if expires == 0 else state] += 1

    @staticmethod
    def body(dlg, side, aor, state, version, event=None):
        """The dialog-info document of one side of ``dlg`` (RFC 4235): the
        caller's dialog is the ``initiator``'s with its From tag and Contact
        local, the callee's the ``recipient``'s with the To tag and the
        answering Contact local (a phone's call pickup needs the tags)."""
        caller = (dlg.from_uri, dlg.from_tag, dlg.caller_contact)
        callee = (dlg.to_uri, dlg.to_tag, dlg.callee_contact)
        (local, local_tag, local_target), (remote, remote_tag, remote_target) = \
            (caller, callee) if side == CALLER else (callee, caller)
        return dialog_info(aor, version, f"{dlg.id}:{side}", state, call_id=dlg.callid,
                           local_tag=local_tag, remote_tag=remote_tag,
                           direction=DIRECTIONS[side], local=local, remote=remote,
                           local_target=local_target, remote_target=remote_target,
                           event=event)
