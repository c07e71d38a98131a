"""Tests for sipdisp.config and the schema sipdisp.schema assembles from the packages:
types, defaults, one-line errors, the YAML loader and the docs generator."""

import copy
import math
import os
import pickle
import subprocess
import sys

import pytest

from sipdisp import config
from sipdisp.config import Config, ConfigError
from sipdisp.config import docs
from sipdisp.config.model import (
    Bool,
    Enum,
    HostPort,
    Int,
    Key,
    ListOf,
    Nullable,
    Path,
    Schema,
    Seconds,
    Section,
    SipUri,
    Str,
    Url,
)
from sipdisp.schema import SCHEMA, config_from_dict, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def error(raw, schema=SCHEMA):
    """Validate C{raw} and return the one-line error message."""
    with pytest.raises(ConfigError) as info:
        schema.validate(raw)
    message = str(info.value)
    assert "\n" not in message
    return message


def parse(type_, value):
    """Parse one value with one type, located at C{k}."""
    return type_.parse(value, "k")


def type_error(type_, value):
    """Return the one-line message for a value the type refuses, located at C{k}."""
    with pytest.raises(ConfigError) as info:
        type_.parse(value, "k")
    assert "\n" not in str(info.value)
    return str(info.value)


def write(tmp_path, text, name="sipdisp.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# -- defaults ------------------------------------------------------------


FOUNDATION_DEFAULTS = {
    "listen": {
        "udp": [("127.0.0.1", 5060)],
        "tcp": [("127.0.0.1", 5060)],
        "tls": [],
        "ws": [("127.0.0.1", 5062)],
        "wss": [],
    },
    "advertise": {"host": None, "port": None},
    "tls": {
        "certificate": None,
        "private_key": None,
        "ca_file": None,
        "verify_server": True,
        "require_client_certificate": False,
    },
    "connections": {"max": 2048, "max_outgoing": 1024, "max_per_source": 64,
                    "idle_timeout": 3605.0, "first_message_timeout": 10.0,
                    "idle_timeout_before_message": 30.0, "max_write_buffer": 1048576,
                    "send_timeout": 10.0, "connect_timeout": 5.0, "max_header_size": 16384,
                    "max_messages_per_second": 1000, "max_messages_per_source": 2000},
    "sip": {
        "max_message_size": 65535,
        "max_via_headers": 70,
        "max_route_headers": 30,
        "max_transactions": 100000,
        "t1": 0.5,
        "t2": 4.0,
        "t4": 5.0,
        "fr_timer": 30.0,
        "fr_inv_timer": 120.0,
        "server_header": "sipdisp",
    },
    "proxy": {
        "domains": [],
        "max_forwards": 10,
        "record_route": True,
        "next_hop": "sip:127.0.0.1:5080",
        "branch_timeout": 2.0,
        "failover_codes": [500, 502, 503, 504, 408],
        "secret": None,
        "secret_file": "var/node_secret",
        "gc_freeze_interval": 1.0,
        "gc_full_interval": 600.0,
    },
    "storage": {
        "url": "sqlite:///var/sipdisp.db",
        "write_queue_max": 100000,
        "spool_dir": "var/spool",
    },
    "log": {"level": "info", "repeat_limit": 10, "repeat_interval": 10.0, "prefix": ""},
}


def test_foundation_defaults_are_the_contract():
    """An empty mapping gives exactly the documented foundation defaults."""
    got = config_from_dict({}).as_dict()
    for section, values in FOUNDATION_DEFAULTS.items():
        assert got[section] == values, section


def test_empty_file_gives_all_defaults(tmp_path):
    """An empty file, a comment-only file and a file of empty sections all load as the defaults."""
    defaults = config_from_dict({})
    assert load_config(write(tmp_path, "")) == defaults
    assert load_config(write(tmp_path, "# nothing here\n")) == defaults
    assert load_config(write(tmp_path, "listen:\nsip: {}\n")) == defaults


def test_none_gives_all_defaults():
    """config_from_dict(None) is the same as an empty mapping."""
    assert config_from_dict(None) == config_from_dict({})


def test_attribute_access():
    """Values are read as attributes: sections, then keys."""
    cfg = config_from_dict({"listen": {"udp": ["0.0.0.0:5060", "[::1]:5070"]}, "sip": {"t1": 1}})
    assert cfg.listen.udp == [("0.0.0.0", 5060), ("::1", 5070)]
    assert cfg.sip.t1 == 1.0 and isinstance(cfg.sip.t1, float)
    assert cfg.proxy.next_hop == "sip:127.0.0.1:5080"
    assert isinstance(cfg.listen, Config)


def test_missing_attribute_names_the_key():
    """Reading a key that does not exist raises AttributeError naming the dotted key."""
    cfg = config_from_dict({})
    with pytest.raises(AttributeError, match=r"no configuration key sip\.t9"):
        cfg.sip.t9


def test_config_is_read_only():
    """Assigning to a Config raises."""
    cfg = config_from_dict({})
    with pytest.raises(AttributeError):
        cfg.sip.t1 = 2


def test_as_dict_round_trips():
    """config_from_dict(cfg.as_dict()) gives an equal Config, and as_dict copies lists."""
    cfg = config_from_dict({"listen": {"udp": ["[::1]:0"], "tcp": ["example.com:5060"]}})
    again = config_from_dict(cfg.as_dict())
    assert again == cfg
    cfg.as_dict()["listen"]["udp"].append(("x", 1))
    assert cfg.listen.udp == [("::1", 0)]


def test_config_copies_and_pickles():
    """A Config survives copy.deepcopy and pickle as an equal Config."""
    cfg = config_from_dict({"listen": {"udp": ["[::1]:5060"]}})
    assert copy.deepcopy(cfg) == cfg
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert copy.deepcopy(cfg).listen.udp is not cfg.listen.udp


def test_check_messages_stay_on_one_line():
    """A ConfigError built with a multi-line problem is flattened to one line."""
    assert str(ConfigError("a.b", "first\n  second")) == "a.b: first second"


def test_defaults_are_fresh_objects():
    """Two configs never share a mutable default list."""
    a, b = config_from_dict({}), config_from_dict({})
    assert a.proxy.failover_codes is not b.proxy.failover_codes


# -- types ---------------------------------------------------------------


def test_str():
    """Str takes any string and refuses other values."""
    assert parse(Str(), "") == ""
    assert parse(Str(), "sipdisp") == "sipdisp"
    assert type_error(Str(), 5) == "k: expected a string, got 5"
    assert type_error(Str(), None) == "k: expected a string, got null"


def test_int():
    """Int takes integers within its bounds and refuses bools, floats and strings."""
    assert parse(Int(), -3) == -3
    assert parse(Int(min=1, max=10), 10) == 10
    assert type_error(Int(), True) == "k: expected an integer, got true"
    assert type_error(Int(), 1.5) == "k: expected an integer, got 1.5"
    assert type_error(Int(), "5060") == 'k: expected an integer, got "5060"'
    assert type_error(Int(min=1), 0) == "k: must be >= 1, got 0"
    assert type_error(Int(max=10), 11) == "k: must be <= 10, got 11"


def test_seconds():
    """Seconds takes ints and floats as float seconds and enforces its bounds."""
    assert parse(Seconds(), 3) == 3.0 and isinstance(parse(Seconds(), 3), float)
    assert parse(Seconds(positive=True), 0.001) == 0.001
    assert parse(Seconds(min=1, max=2), 2) == 2.0
    assert type_error(Seconds(), "fast") == 'k: expected a number of seconds, got "fast"'
    assert type_error(Seconds(), False) == "k: expected a number of seconds, got false"
    assert type_error(Seconds(positive=True), 0) == "k: must be > 0, got 0"
    assert type_error(Seconds(min=1), 0.5) == "k: must be >= 1, got 0.5"
    assert type_error(Seconds(max=2), 2.5) == "k: must be <= 2, got 2.5"
    assert type_error(Seconds(), math.inf) == "k: must be a finite number of seconds, got inf"


def test_bool():
    """Bool takes only true and false, not strings or numbers."""
    assert parse(Bool(), True) is True
    assert parse(Bool(), False) is False
    assert type_error(Bool(), "true") == 'k: expected true or false, got "true"'
    assert type_error(Bool(), 1) == "k: expected true or false, got 1"


def test_enum():
    """Enum takes one of its choices and lists them when refusing."""
    level = Enum("debug", "info")
    assert parse(level, "info") == "info"
    assert type_error(level, "verbose") == 'k: "verbose" is not one of debug, info'
    assert type_error(level, 3) == "k: 3 is not one of debug, info"
    assert type_error(level, ["info"]) == "k: a list is not one of debug, info"


def test_path():
    """Path takes a non-empty string, kept as written."""
    assert parse(Path(), "var/spool") == "var/spool"
    assert type_error(Path(), "") == 'k: expected a path, got ""'
    assert type_error(Path(), 3) == "k: expected a path, got 3"


def test_hostport_accepts_ipv4_names_ipv6_and_port_zero():
    """host:port parses IPv4, host names and bracketed IPv6 (without brackets) and allows port 0."""
    hp = HostPort()
    assert parse(hp, "127.0.0.1:5060") == ("127.0.0.1", 5060)
    assert parse(hp, "sip.example.com:5061") == ("sip.example.com", 5061)
    assert parse(hp, "localhost:0") == ("localhost", 0)
    assert parse(hp, "[::1]:5060") == ("::1", 5060)
    assert parse(hp, "[::]:65535") == ("::", 65535)
    assert parse(hp, ("::1", 5060)) == ("::1", 5060)
    assert parse(hp, ("10.0.0.1", 5060)) == ("10.0.0.1", 5060)


@pytest.mark.parametrize("text, message", [
    ("127.0.0.1:abc", 'k: "127.0.0.1:abc" is not host:port'),
    ("127.0.0.1", 'k: "127.0.0.1" is not host:port'),
    ("127.0.0.1:", 'k: "127.0.0.1:" is not host:port'),
    (":5060", 'k: ":5060" is not host:port'),
    ("bad host:5060", 'k: "bad host:5060" is not host:port'),
    ("[1.2.3.4]:5060", 'k: "[1.2.3.4]:5060" is not host:port'),
    ("[::1]", 'k: "[::1]" is not host:port (write IPv6 as "[::1]:5060")'),
    ("::1:5060", 'k: "::1:5060" is not host:port (write IPv6 as "[::1]:5060")'),
    ("127.0.0.1:65536", 'k: "127.0.0.1:65536": port must be 0..65535'),
    ("127.0.0.1:-1", 'k: "127.0.0.1:-1" is not host:port'),
])
def test_hostport_errors(text, message):
    """A malformed host:port is refused with a message quoting it."""
    assert type_error(HostPort(), text) == message


def test_hostport_refuses_non_strings():
    """A bare port number is not host:port."""
    assert type_error(HostPort(), 5060) == 'k: expected "host:port", got 5060'


def test_list_of():
    """ListOf parses each item and names the index of a bad one."""
    assert parse(ListOf(Int()), [1, 2]) == [1, 2]
    assert parse(ListOf(Int()), []) == []
    assert type_error(ListOf(Int()), [1, "x"]) == 'k[1]: expected an integer, got "x"'
    assert type_error(ListOf(HostPort()), "127.0.0.1:5060") == (
        'k: expected a list of host:port, got "127.0.0.1:5060"')
    assert type_error(ListOf(Int()), None) == "k: expected a list of int, got null"


def test_sip_uri():
    """SipUri takes sip: and sips: URIs (scheme in any case) and keeps them as strings."""
    assert parse(SipUri(), "sip:127.0.0.1:5080") == "sip:127.0.0.1:5080"
    assert parse(SipUri(), "sips:fs.example.com;transport=tls") == "sips:fs.example.com;transport=tls"
    assert parse(SipUri(), "SIP:a@b") == "SIP:a@b"
    message = "is not a SIP URI (must start with sip: or sips:)"
    assert type_error(SipUri(), "http://x") == f'k: "http://x" {message}'
    assert type_error(SipUri(), "sip:") == f'k: "sip:" {message}'
    assert type_error(SipUri(), "127.0.0.1:5080") == f'k: "127.0.0.1:5080" {message}'
    assert type_error(SipUri(), 5) == "k: expected a SIP URI, got 5"


def test_url():
    """Url takes scheme:rest strings and refuses anything without a scheme."""
    assert parse(Url(), "sqlite:///var/sipdisp.db") == "sqlite:///var/sipdisp.db"
    assert parse(Url(), "postgresql://sipdisp@127.0.0.1/sipdisp") == "postgresql://sipdisp@127.0.0.1/sipdisp"
    assert type_error(Url(), "var/sipdisp.db") == 'k: "var/sipdisp.db" is not a URL (scheme:...)'
    assert type_error(Url(), "sqlite:// x") == 'k: "sqlite:// x" is not a URL (scheme:...)'
    assert type_error(Url(), None) == "k: expected a URL, got null"


def test_nullable():
    """Nullable takes null or the inner type, and says so when refusing."""
    port = Nullable(Int(min=1))
    assert parse(port, None) is None
    assert parse(port, 5) == 5
    assert type_error(port, "x") == 'k: expected an integer or null, got "x"'
    assert type_error(port, 0) == "k: must be >= 1, got 0"


def test_describe_names_used_in_docs():
    """Every type describes itself in a short phrase for the reference."""
    assert Nullable(ListOf(HostPort())).describe() == "list of host:port or null"
    assert Int(min=1, max=255).describe() == "int (1..255)"
    assert Seconds(positive=True).describe() == "seconds (> 0)"
    assert Enum("a", "b").describe() == "one of a, b"
    assert SipUri().describe() == "SIP URI"
    assert Url().describe() == "URL"
    assert Path().describe() == "path"
    assert Bool().describe() == "bool"
    assert Str().describe() == "string"


def test_long_values_are_shortened_in_messages():
    """A very long bad value is cut so the message stays readable."""
    message = type_error(Int(), "x" * 500)
    assert len(message) < 100 and message.endswith('..."')


def test_newlines_in_values_stay_on_one_line():
    """A value containing newlines is escaped, keeping the error on one line."""
    assert type_error(Int(), "a\nb") == 'k: expected an integer, got "a\\nb"'


# -- errors from the foundation schema -----------------------------------


@pytest.mark.parametrize("raw, message", [
    ({"listen": {"udp": ["127.0.0.1:5060", "127.0.0.1:abc"]}},
     'listen.udp[1]: "127.0.0.1:abc" is not host:port'),
    ({"sip": {"t1": "fast"}}, 'sip.t1: expected a number of seconds, got "fast"'),
    ({"sip": {"t1": 0}}, "sip.t1: must be > 0, got 0"),
    ({"sip": {"t1": None}}, "sip.t1: expected a number of seconds, got null"),
    ({"proxy": {"bogus": 1}}, "proxy.bogus: unknown key"),
    ({"bogus": {}}, "bogus: unknown key"),
    ({"proxy": {"record_routes": True}}, "proxy.record_routes: unknown key (did you mean record_route?)"),
    ({"proxy": {"max_forwards": 0}}, "proxy.max_forwards: must be >= 1, got 0"),
    ({"proxy": {"next_hop": "127.0.0.1:5080"}},
     'proxy.next_hop: "127.0.0.1:5080" is not a SIP URI (must start with sip: or sips:)'),
    ({"proxy": {"failover_codes": [500, 200]}}, "proxy.failover_codes[1]: must be >= 300, got 200"),
    ({"proxy": {"domains": "example.com"}}, 'proxy.domains: expected a list of string, got "example.com"'),
    ({"advertise": {"port": 70000}}, "advertise.port: must be <= 65535, got 70000"),
    ({"log": {"level": "verbose"}}, 'log.level: "verbose" is not one of debug, info, warn, error'),
    ({"tls": {"verify_server": "no"}}, 'tls.verify_server: expected true or false, got "no"'),
    ({"storage": {"url": "var/db"}}, 'storage.url: "var/db" is not a URL (scheme:...)'),
    ({"listen": ["127.0.0.1:5060"]}, "listen: expected a mapping, got a list"),
    ({"sip": 5}, "sip: expected a mapping, got 5"),
    (["listen"], "config: expected a mapping, got a list"),
])
def test_error_messages(raw, message):
    """Each invalid value gives one line naming the dotted key and what is wrong."""
    assert error(raw) == message


def test_tls_listener_needs_certificate_and_key():
    """A TLS or WSS listener without certificate or key is refused, naming the missing key."""
    assert error({"listen": {"tls": ["0.0.0.0:5061"]}}) == (
        "tls.certificate: required when listen.tls is not empty")
    assert error({"listen": {"tls": ["0.0.0.0:5061"]}, "tls": {"certificate": "c.pem"}}) == (
        "tls.private_key: required when listen.tls is not empty")
    assert error({"listen": {"wss": ["0.0.0.0:5063"]}}) == (
        "tls.certificate: required when listen.wss is not empty")
    cfg = config_from_dict({
        "listen": {"tls": ["0.0.0.0:5061"], "wss": ["0.0.0.0:5063"]},
        "tls": {"certificate": "c.pem", "private_key": "k.pem"},
    })
    assert cfg.tls.certificate == "c.pem"


def test_t2_not_below_t1():
    """sip.t2 smaller than sip.t1 is refused."""
    assert error({"sip": {"t1": 2, "t2": 1}}) == "sip.t2: must be >= sip.t1 (2.0), got 1.0"


@pytest.mark.parametrize("section, method, codes", [
    ("dispatcher", "ping_method", "ping_reply_codes"),
    ("load_balancer", "probing_method", "probing_reply_codes"),
])
def test_probers_refuse_call_methods_and_bad_reply_codes(section, method, codes):
    """The dispatcher's pings and the load balancer's probes follow one rule: no INVITE,
    ACK or CANCEL, and reply codes that parse."""
    for bad in ("INVITE", "ack", "OPT IONS"):
        assert error({section: {method: bad}}) == (
            f"{section}.{method}: must be a method such as OPTIONS or INFO "
            f"(not INVITE, ACK or CANCEL), got {bad!r}")
    assert getattr(getattr(config_from_dict({section: {method: "INFO"}}), section), method) == "INFO"
    assert error({section: {codes: "class=9"}}) == f"{section}.{codes}: class must be 1..6, got 9"


def test_reply_codes_syntax_per_prober():
    """The load balancer also takes OpenSIPS' code list; the dispatcher only Kamailio's syntax."""
    lb = config_from_dict({"load_balancer": {"probing_reply_codes": "501, 403"}})
    assert lb.load_balancer.probing_reply_codes == "501, 403"
    assert error({"dispatcher": {"ping_reply_codes": "501, 403"}}) == (
        "dispatcher.ping_reply_codes: '501' is not class=N or code=NNN")
    assert error({"load_balancer": {"probing_reply_codes": "501, abc"}}) == (
        "load_balancer.probing_reply_codes: 'abc' is not a reply code")


# -- nested sections and schema declaration ------------------------------


def nested_schema():
    schema = Schema()
    schema.section(
        "outer", "An outer section.",
        Key("a", Int(), 1, "A number."),
        Section("inner", "An inner section.",
                Key("b", Str(), "x", "A string."),
                Section("deepest", "The deepest section.",
                        Key("c", Bool(), False, "A flag."))),
    )
    return schema


def test_nested_sections_take_defaults_and_values():
    """Sub-sections nest as attributes, with defaults filled at every level."""
    cfg = nested_schema().validate({"outer": {"inner": {"deepest": {"c": True}}}})
    assert cfg.outer.a == 1
    assert cfg.outer.inner.b == "x"
    assert cfg.outer.inner.deepest.c is True
    assert cfg.as_dict() == {"outer": {"a": 1, "inner": {"b": "x", "deepest": {"c": True}}}}


def test_nested_unknown_keys_are_named_by_full_path():
    """An unknown or bad key deep in the tree is named by its full dotted path."""
    schema = nested_schema()
    assert error({"outer": {"inner": {"deepest": {"d": 1}}}}, schema) == (
        "outer.inner.deepest.d: unknown key")
    assert error({"outer": {"inner": {"x": 1}}}, schema) == "outer.inner.x: unknown key"
    assert error({"outer": {"inner": {"deepest": {"c": "yes"}}}}, schema) == (
        'outer.inner.deepest.c: expected true or false, got "yes"')
    assert error({"outer": {"inner": 3}}, schema) == "outer.inner: expected a mapping, got 3"


def test_schema_keys_lists_dotted_names():
    """Schema.keys() yields every key by dotted name in declaration order."""
    assert [name for name, _ in nested_schema().keys()] == [
        "outer.a", "outer.inner.b", "outer.inner.deepest.c"]


def test_checks_run_after_validation():
    """A registered check sees the validated Config and its error propagates."""
    schema = nested_schema()

    @schema.check
    def _a_small(cfg):
        """outer.a must be small."""
        if cfg.outer.a > 5:
            raise ConfigError("outer.a", "must be small")

    assert error({"outer": {"a": 6}}, schema) == "outer.a: must be small"


def test_bad_default_fails_at_declaration():
    """A default that does not match its type is a programming error caught when declared."""
    with pytest.raises(ConfigError, match=r"\(default of port\): must be <= 10"):
        Key("port", Int(max=10), 11, "A port.")


def test_declaration_mistakes_are_refused():
    """Duplicate names, missing docs and non-identifier names fail when the schema is declared."""
    schema = nested_schema()
    with pytest.raises(TypeError, match="declared twice"):
        schema.section("outer", "Again.")
    with pytest.raises(TypeError, match="declared twice"):
        Section("s", "Doc.", Key("a", Int(), 1, "A."), Key("a", Int(), 2, "B."))
    with pytest.raises(TypeError, match="one-sentence doc"):
        Key("a", Int(), 1, "")
    with pytest.raises(TypeError, match="identifier"):
        Key("max-forwards", Int(), 1, "Doc.")
    with pytest.raises(TypeError, match="reserved"):
        Key("as_dict", Int(), 1, "Doc.")
    with pytest.raises(TypeError, match="one-sentence doc"):
        schema.check(lambda cfg: None)


def test_every_foundation_key_has_a_doc_sentence():
    """Every key in the real schema has a one-line doc ending with a full stop."""
    for name, key in SCHEMA.keys():
        assert key.doc.endswith("."), name
        assert "\n" not in key.doc, name


def test_schema_is_assembled_in_the_documented_order():
    """The packages' sections sit in the order docs/configuration.md shows them."""
    assert list(SCHEMA.root.children) == [
        "listen", "advertise", "tls", "connections", "websocket", "sip", "proxy", "storage", "log",
        "console", "http", "dispatcher", "routing", "registrar", "usrloc", "auth", "nat",
        "dialog", "accounting", "load_balancer", "aliases", "dialplan", "msilo", "drouting", "cache", "dns",
        "flood", "rtpengine", "topology_hiding", "presence", "cluster", "workers"]


def test_schema_add_takes_a_section_and_its_checks():
    """Schema.add adds a section declared elsewhere, then runs its checks on validation."""
    def small(cfg):
        """outer.a must be small."""
        if cfg.outer.a > 5:
            raise ConfigError("outer.a", "must be small")

    schema = Schema()
    schema.add(Section("outer", "An outer section.", Key("a", Int(), 1, "A number.")), small)
    assert schema.checks == [small]
    assert error({"outer": {"a": 6}}, schema) == "outer.a: must be small"


def test_importing_config_loads_no_other_part_of_sipdisp():
    """import sipdisp.config loads only its own modules: no subsystem, no sip layer."""
    code = "import sipdisp.config, sys; print(' '.join(m for m in sys.modules if m.startswith('sipdisp')))"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    assert sorted(m for m in out if m != "sipdisp" and not m.startswith("sipdisp.config.")) == [
        "sipdisp.config"]


# -- YAML loading --------------------------------------------------------


def test_engine_loads_a_file_against_the_schema_given(tmp_path):
    """sipdisp.config.load_config validates the file against the schema it is handed."""
    cfg = config.load_config(write(tmp_path, "outer:\n  a: 3\n"), nested_schema())
    assert cfg.outer.a == 3 and cfg.outer.inner.b == "x"


def test_load_config_reads_yaml(tmp_path):
    """A YAML file is read and validated, with defaults for what it leaves out."""
    path = write(tmp_path, (
        "listen:\n"
        "  udp: ['0.0.0.0:5060', '[::]:5060']\n"
        "  ws: []\n"
        "sip:\n"
        "  t1: 0.25\n"
        "advertise:\n"
        "  host: 203.0.113.7\n"
        "  port: 5060\n"
    ))
    cfg = load_config(path)
    assert cfg.listen.udp == [("0.0.0.0", 5060), ("::", 5060)]
    assert cfg.listen.ws == []
    assert cfg.listen.tcp == [("127.0.0.1", 5060)]
    assert cfg.sip.t1 == 0.25
    assert (cfg.advertise.host, cfg.advertise.port) == ("203.0.113.7", 5060)


def test_validation_errors_from_files_name_the_key(tmp_path):
    """A bad value in a file gives the same one-line error as from a dict."""
    path = write(tmp_path, "listen:\n  udp:\n    - 127.0.0.1:5060\n    - 127.0.0.1:abc\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == 'listen.udp[1]: "127.0.0.1:abc" is not host:port'


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    """A YAML syntax error is one line starting with file:line."""
    path = write(tmp_path, "listen:\n  udp: [\"127.0.0.1:5060\"\nsip:\n  t1: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:3: YAML error: ")


def test_yaml_bad_indentation_names_file_and_line(tmp_path):
    """A mapping value in the wrong place is reported at its line."""
    path = write(tmp_path, "sip:\n  t1: 1\n  t2: 4\n t4: 5\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:4: YAML error: ")


def test_duplicate_yaml_key_is_refused(tmp_path):
    """A key written twice in one mapping is an error, not a silent override."""
    path = write(tmp_path, "sip:\n  t1: 1\n  t2: 4\n  t1: 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:4: YAML error: duplicate key 't1'"


def test_top_level_must_be_a_mapping(tmp_path):
    """A file whose top level is a list or scalar is refused, naming the file."""
    path = write(tmp_path, "- listen\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: expected a mapping of sections at the top level"


def test_missing_file(tmp_path):
    """An unreadable file gives one line naming the file and the OS reason."""
    path = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: cannot read: No such file or directory"


def test_unsafe_yaml_tags_are_refused(tmp_path):
    """Python object tags are not constructed (safe loading)."""
    path = write(tmp_path, "sip: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:1: YAML error: ")


def test_shipped_config_loads():
    """etc/sipdisp.yaml is valid as shipped."""
    load_config(os.path.join(ROOT, "etc", "sipdisp.yaml"))


# -- generated reference -------------------------------------------------


def test_docs_list_every_key_with_type_and_default():
    """The generated reference has a row for every key with its type and default."""
    text = docs.render(SCHEMA)
    for name, key in SCHEMA.keys():
        assert f"| `{name}` | {key.type.describe()} |" in text, name
    assert '| `listen.udp` | list of host:port | `["127.0.0.1:5060"]` |' in text
    assert "| `sip.t1` | seconds (> 0) | `0.5` |" in text
    assert "| `advertise.host` | string or null | `null` |" in text


def test_docs_render_nested_sections_and_checks():
    """Sub-sections get their own heading and checks are listed as rules."""
    schema = nested_schema()

    @schema.check
    def _rule(cfg):
        """outer.a is always fine."""

    text = docs.render(schema)
    assert "\n### outer.inner\n" in text
    assert "\n#### outer.inner.deepest\n" in text
    assert "| `outer.inner.deepest.c` | bool | `false` | A flag. |" in text
    assert "- outer.a is always fine." in text


def test_docs_configuration_md_is_up_to_date():
    """docs/configuration.md is exactly what the generator writes from the schema."""
    path = os.path.join(ROOT, "docs", "configuration.md")
    with open(path, encoding="utf-8") as f:
        committed = f.read()
    assert committed == docs.render(SCHEMA), (
        f"docs/configuration.md is out of date with the packages' settings; "
        f"regenerate it with `{docs.REGENERATE}` (or `make docs`)")


def test_docs_module_runs_as_a_script():
    """python -m sipdisp.schema prints the reference to standard output."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-m", "sipdisp.schema"], cwd=ROOT, env=env,
                         check=True, capture_output=True, text=True).stdout
    assert out == docs.render(SCHEMA)
