"""The recording line's JSON Schema, compiled once into plain Python checks.

``certmatch/core/recording.schema.json`` is the published contract for one recording line.
Validating with a generic JSON-Schema library costs more than parsing the line, so the
schema is compiled, once per process, into a Python function that checks exactly the
keywords the schema uses (``_CheckCompiler``); ``validate_line`` is the public entry.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

from certmatch.core.dns_facts import DnsAnswer, DnsFacts

SCHEMA_RESOURCE = "recording.schema.json"


_Failure = tuple[tuple[str | int, ...], str]  # (where in the line, what is wrong)
_Check = Callable[[Any], _Failure | None]


@cache
def load_schema() -> dict[str, Any]:
    """The published JSON Schema for one recording line, as shipped inside the package."""
    text = (
        resources.files(__package__ or "certmatch.core")
        .joinpath(SCHEMA_RESOURCE)
        .read_text(encoding="utf-8")
    )
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate_line(data: Any) -> str | None:
    """Why a parsed line breaks the recording schema, or None if it conforms.

    An ordinary session line is settled by a hand-written fast path (:func:`_plain_session`);
    anything it is not sure of goes to the check compiled from the schema, which also says
    what is wrong.
    """
    if _plain_session(data):
        return None
    failure = _line_check()(data)
    return None if failure is None else _describe(failure)


# --- the fast path ---------------------------------------------------------------------------
# It accepts only what the schema accepts (tests/test_recording.py compares it with the
# compiled check and with jsonschema); whatever it does not accept, the compiled check decides.
# Its names come from the schema's own lists, so a new required field or enum value there
# changes it too; a new *kind* of rule makes _plain_session_rules() refuse to build it.


def _plain_session(v: Any) -> bool:
    """True when ``v`` is surely a valid session line; False means "ask the full check"."""
    if type(v) is not dict or v.get("type") != "session":
        return False
    rules = _RULES or _plain_session_rules()
    if rules is None:
        return False
    try:  # a missing required field is a KeyError, a list where a name goes a TypeError
        if not _STRING_OR_NULL.issuperset(map(type, rules.nullable_strings(v))):
            return False
        for value, allowed in zip(rules.enum_values(v), rules.enum_sets, strict=True):
            if value not in allowed or (type(value) is not str and value is not None):
                return False
        for value in rules.string_lists(v):
            if type(value) is not list:
                return False
            "".join(value)  # TypeError unless every item is a string
        ident, started = v["id"], v["started"]
        if type(ident) is not str or not ident or type(started) is not str:
            return False
        if rules.timestamp(started) is None or not _plain_chain(v["chain"], rules):
            return False
        if not rules.optional_names.isdisjoint(v.keys()) and not _plain_optional(v, rules):
            return False
    except (KeyError, TypeError):
        return False
    dns = v.get("dns")
    if dns is not None and not _plain_dns(dns, rules):
        return False
    probe = v.get("sni_probe")
    if probe is not None and not _plain_probe(probe, rules):
        return False
    starttls = v.get("starttls")
    return starttls is None or _plain_starttls(starttls, rules)


def _plain_optional(v: dict[str, Any], rules: _PlainRules) -> bool:
    """The fields a line may leave out (an older recording has none of them)."""
    get = v.get
    for name, allowed in rules.optional_enums:
        value = get(name)
        if value is not None and (type(value) is not str or value not in allowed):
            return False
    for name, kinds in rules.optional_scalars:
        if type(get(name)) not in kinds:
            return False
    for name in rules.optional_lists:
        value = get(name)
        if value is not None:
            if type(value) is not list:
                return False
            "".join(value)  # TypeError unless every item is a string
    return True


_STRING_OR_NULL = frozenset({str, type(None)})


def _plain_chain(chain: Any, rules: _PlainRules) -> bool:
    if type(chain) is not list:
        return False
    known = rules.known_certificates
    for cert in chain:
        if type(cert) is not str:
            return False
        if cert in known:  # a certificate already seen to match the pattern
            continue
        if rules.der_base64(cert) is None:
            return False
        if len(known) >= 4096:
            known.clear()
        known.add(cert)
    return True


def _plain_probe(probe: Any, rules: _PlainRules) -> bool:
    if type(probe) is not dict or not rules.probe_required <= probe.keys():
        return False
    error = probe["error"]
    return (
        type(probe["sni"]) is str
        and (error is None or type(error) is str)
        and _plain_chain(probe["chain"], rules)
    )


def _plain_dns(dns: Any, rules: _PlainRules) -> bool:
    """The schema's dnsFacts, with every dnsAnswer in it (``_PlainRules`` checks that the
    schema says exactly this)."""
    if type(dns) is not dict:
        return False
    try:
        host, resolvers, answers = rules.dns_required(dns)
        if type(host) is not str or type(resolvers) is not list or type(answers) is not list:
            return False
        "".join(resolvers)  # TypeError unless every item is a string
        get = dns.get
        for name in rules.dns_strings:
            if type(get(name)) not in _STRING_OR_NULL:
                return False
        if type(get(rules.dns_number)) not in _NUMBER_OR_NULL:
            return False
        fields = rules.answer_fields
        for answer in answers:
            if type(answer) is not dict:
                return False
            name, rtype, resolver, data, ttl, error = fields(answer)
            if (
                type(name) is not str
                or type(rtype) is not str
                or type(resolver) is not str
                or type(data) is not list
                or (ttl is not None and type(ttl) is not int)
                or (error is not None and type(error) is not str)
            ):
                return False
            "".join(data)
    except (KeyError, TypeError):
        return False
    return True


_NUMBER_OR_NULL = frozenset({int, float, type(None)})  # bool is no number here


def plain_dns_facts(dns: Any) -> DnsFacts | None:
    """A line's ``dns`` value read into :class:`DnsFacts` in the same pass that checks it:
    None unless it is surely what the schema's dnsFacts accepts (then the full check
    decides). For a reader that checks the rest of the line without it."""
    rules = _RULES or _plain_session_rules()
    if rules is None or type(dns) is not dict:
        return None
    try:
        host, resolvers, answers = rules.dns_required(dns)
        if type(host) is not str or type(resolvers) is not list or type(answers) is not list:
            return None
        "".join(resolvers)  # TypeError unless every item is a string
        get = dns.get
        server_ip, mail_domain, started = get("server_ip"), get("mail_domain"), get("started")
        elapsed = get("elapsed")
        if (
            type(server_ip) not in _STRING_OR_NULL
            or type(mail_domain) not in _STRING_OR_NULL
            or type(started) not in _STRING_OR_NULL
            or type(elapsed) not in _NUMBER_OR_NULL
        ):
            return None
        fields = rules.answer_fields
        new = object.__new__
        read = []
        for answer in answers:
            if type(answer) is not dict:
                return None
            name, rtype, resolver, data, ttl, error = fields(answer)
            if (
                type(name) is not str
                or type(rtype) is not str
                or type(resolver) is not str
                or type(data) is not list
                or (ttl is not None and type(ttl) is not int)
                or (error is not None and type(error) is not str)
            ):
                return None
            "".join(data)
            item = new(DnsAnswer)
            vars(item).update(
                name=name, type=rtype, resolver=resolver, data=tuple(data), ttl=ttl, error=error
            )
            read.append(item)
    except (KeyError, TypeError):
        return None
    return DnsFacts(host, list(resolvers), server_ip, mail_domain, read, started, elapsed)


def _plain_starttls(starttls: Any, rules: _PlainRules) -> bool:
    if type(starttls) is not dict or not rules.starttls_required <= starttls.keys():
        return False
    for name, kind in rules.starttls_fields:
        x = starttls[name]
        if x is not None and type(x) is not kind:
            return False
    return True


class _PlainRules:
    """The schema's lists, read once, that the fast path checks a session line against."""

    def __init__(self, schema: dict[str, Any]) -> None:
        defs = schema["$defs"]
        session = defs["session"]
        props: dict[str, Any] = session["properties"]
        refs = {name: p.get("$ref", "").rsplit("/", 1)[-1] for name, p in props.items()}
        self.required = required = frozenset(session["required"])
        # Required fields are fetched with itemgetter (a missing one is a KeyError); the
        # others, which older lines leave out, with get (a missing one is None).
        nullable_strings = tuple(n for n, r in refs.items() if r == "nullableString")
        string_lists = tuple(n for n, r in refs.items() if r == "stringList")
        enums = tuple((n, frozenset(p["enum"])) for n, p in props.items() if "enum" in p)
        self.enums = tuple((n, allowed) for n, allowed in enums if n in required)
        required_strings = tuple(n for n in nullable_strings if n in required)
        required_lists = tuple(n for n in string_lists if n in required)
        if min(len(required_strings), len(required_lists), len(self.enums)) < 2:
            raise ValueError("itemgetter of one name returns the value, not a tuple")
        self.nullable_strings = operator.itemgetter(*required_strings)
        self.string_lists = operator.itemgetter(*required_lists)
        self.enum_values = operator.itemgetter(*(n for n, _ in self.enums))
        self.enum_sets = tuple(allowed for _, allowed in self.enums)
        scalar_kinds = {
            "nullableString": frozenset({str, type(None)}),
            "nullableInteger": frozenset({int, type(None)}),  # bool is not int here
            "nullableNumber": frozenset({int, float, type(None)}),
        }
        fixed_optional = {"sni_probe", "starttls", "dns"}
        self.optional_enums = tuple(
            (n, allowed - {None}) for n, allowed in enums if n not in required
        )
        self.optional_scalars = tuple(
            (n, scalar_kinds[r])
            for n, r in refs.items()
            if n not in required and n not in fixed_optional and r in scalar_kinds
        )
        optional_list = {"anyOf": [{"$ref": "#/$defs/stringList"}, {"type": "null"}]}
        self.optional_lists = tuple(
            n for n, p in props.items() if n not in required and _without_notes(p) == optional_list
        )
        optional = {n for n in props if n not in required} - fixed_optional
        optional -= set(self.optional_lists)
        if optional - {n for n, _ in self.optional_enums} - {n for n, _ in self.optional_scalars}:
            raise ValueError("the fast path does not check every optional field")
        if any(None not in allowed for n, allowed in enums if n not in required):
            raise ValueError("an optional enum must allow null: absent reads as None")
        # absent, each reads as None, which every optional rule allows (checked above)
        self.optional_names = frozenset(optional) | frozenset(self.optional_lists)
        fetched = {"type", "id", "started", "chain", *nullable_strings, *string_lists}
        if required - fetched - {n for n, _ in self.enums}:
            raise ValueError("the fast path does not fetch every required field")
        self.timestamp = re.compile(defs["timestamp"]["pattern"]).search
        self.der_base64 = re.compile(defs["derBase64"]["pattern"]).search
        self.probe_required = frozenset(defs["sniProbe"]["required"])
        self.starttls_required = frozenset(defs["startTls"]["required"])
        kinds = {"nullableString": str, "nullableBoolean": bool}
        self.starttls_fields = tuple(
            (n, kinds[p["$ref"].rsplit("/", 1)[-1]])
            for n, p in defs["startTls"]["properties"].items()
        )
        self.known_certificates: set[str] = set()
        # Refuse to build (every line then takes the full check) unless the schema says
        # exactly what this fast path checks, and nothing more.
        bare = {name: _without_notes(node) for name, node in defs.items()}
        expected = {
            "nullableString": {"type": ["string", "null"]},
            "nullableBoolean": {"type": ["boolean", "null"]},
            "nullableInteger": {"type": ["integer", "null"]},
            "nullableNumber": {"type": ["number", "null"]},
            "stringList": {"type": "array", "items": {"type": "string"}},
            "chain": {"type": "array", "items": {"$ref": "#/$defs/derBase64"}},
            "derBase64": {"type": "string", "pattern": defs["derBase64"]["pattern"]},
            "timestamp": {"type": "string", "pattern": defs["timestamp"]["pattern"]},
        }
        fixed = {
            "type": {"const": "session"},
            "id": {"type": "string", "minLength": 1},
            "started": {"$ref": "#/$defs/timestamp"},
            "chain": {"$ref": "#/$defs/chain"},
            "sni_probe": {"anyOf": [{"$ref": "#/$defs/sniProbe"}, {"type": "null"}]},
            "starttls": {"anyOf": [{"$ref": "#/$defs/startTls"}, {"type": "null"}]},
            "dns": {"anyOf": [{"$ref": "#/$defs/dnsFacts"}, {"type": "null"}]},
        }
        plain = {n for n, _ in enums} | {*nullable_strings, *string_lists}
        plain |= {n for n, _ in self.optional_scalars}
        fixed |= dict.fromkeys(self.optional_lists, optional_list)
        for name, node in props.items():
            node = _without_notes(node)
            if name in fixed:
                ok = node == fixed[name]
            elif name in plain:
                ok = len(node) == 1 and all(
                    type(a) is str or (a is None and name not in required)
                    for a in node.get("enum", ())
                )
            else:
                ok = False
            if not ok:
                raise ValueError(f"the fast path does not know the rule for {name}")
        for name, body in expected.items():
            if bare[name] != body:
                raise ValueError(f"the fast path does not know the rule {name}")
        for name in ("sniProbe", "startTls"):
            node = bare[name]
            if set(node) != {"type", "required", "properties"} or node["type"] != "object":
                raise ValueError(f"the fast path does not know the rule {name}")
            for prop in node["properties"].values() if name == "startTls" else ():
                if set(_without_notes(prop)) != {"$ref"}:
                    raise ValueError(f"the fast path does not know a rule in {name}")
        if _bare(defs["dnsFacts"]) != _DNS_FACTS or _bare(defs["dnsAnswer"]) != _DNS_ANSWER:
            raise ValueError("the fast path does not know the rules of dnsFacts")
        self.dns_required = operator.itemgetter("host", "resolvers", "answers")
        self.dns_strings = ("server_ip", "mail_domain", "started")
        self.dns_number = "elapsed"
        self.answer_fields = operator.itemgetter(*_DNS_ANSWER["required"])
        probe = {n: _without_notes(p) for n, p in defs["sniProbe"]["properties"].items()}
        if probe != {
            "sni": {"type": "string"},
            "chain": {"$ref": "#/$defs/chain"},
            "error": {"$ref": "#/$defs/nullableString"},
        }:
            raise ValueError("the fast path does not know the rules of sniProbe")


def _without_notes(node: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in node.items() if k not in _CheckCompiler.ANNOTATIONS}


def _bare(node: Any) -> Any:
    """``node`` without annotations at any depth (a property may be named like one)."""
    if type(node) is not dict:
        return node
    return {
        k: ({n: _bare(p) for n, p in v.items()} if k == "properties" else _bare(v))
        for k, v in node.items()
        if k not in _CheckCompiler.ANNOTATIONS
    }


# What _plain_dns checks, rule for rule: the schema's dnsFacts and dnsAnswer must say exactly
# this (annotations aside), or the fast path is not built.
_STRING = {"type": "string"}
_NULLABLE_STRING = {"$ref": "#/$defs/nullableString"}
_DNS_FACTS = {
    "type": "object",
    "required": ["host", "resolvers", "answers"],
    "properties": {
        "host": _STRING,
        "resolvers": {"$ref": "#/$defs/stringList"},
        "server_ip": _NULLABLE_STRING,
        "mail_domain": _NULLABLE_STRING,
        "started": _NULLABLE_STRING,
        "elapsed": {"$ref": "#/$defs/nullableNumber"},
        "answers": {"type": "array", "items": {"$ref": "#/$defs/dnsAnswer"}},
    },
}
_DNS_ANSWER = {
    "type": "object",
    "required": ["name", "type", "resolver", "data", "ttl", "error"],
    "properties": {
        "name": _STRING,
        "type": _STRING,
        "resolver": _STRING,
        "data": {"$ref": "#/$defs/stringList"},
        "ttl": {"$ref": "#/$defs/nullableInteger"},
        "error": _NULLABLE_STRING,
    },
}


@cache
def _plain_session_rules() -> _PlainRules | None:
    """The fast path's rules; None (every line to the full check) if the schema outgrew it."""
    global _RULES
    try:
        _RULES = _PlainRules(load_schema())
    except (KeyError, TypeError, ValueError):
        return None
    return _RULES


_RULES: _PlainRules | None = None  # set by the first _plain_session_rules()


@cache
def _line_check() -> _Check:
    return _CheckCompiler(load_schema()).compile()


def _describe(failure: _Failure) -> str:
    where, what = failure
    path = ""
    for part in where:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return f"{path}: {what}" if path else what


def _first_sentence(text: str) -> str:
    """The first sentence of a schema description, without its full stop."""
    head = re.split(r"\.\s+(?=[A-Z])", text.strip(), maxsplit=1)[0]  # not after "e.g."
    head = head.removesuffix(".")
    if head[:2].istitle():  # "One DER-encoded ..." reads as "one DER-encoded ..." after a colon
        head = head[0].lower() + head[1:]
    return head


def show_value(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON Schema means it: true is not 1, 1 is 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def _any_of(value: Any, alternatives: tuple[_Check, ...]) -> _Failure | None:
    failures = []
    for alternative in alternatives:
        failure = alternative(value)
        if failure is None:
            return None
        failures.append(failure)
    deepest = max(failures, key=lambda f: len(f[0]))
    if deepest[0]:
        return deepest  # the value had the right shape; say what inside it is wrong
    return (), "; or ".join(f[1] for f in failures)


def _wrong_type(value: Any, expected: str) -> str:
    return f"expected {expected}, got {show_value(value)}"


def _must_be(value: Any, allowed: tuple[Any, ...]) -> str:
    shown = ", ".join(show_value(a) for a in allowed)
    return f"{show_value(value)}: must be {'one of ' if len(allowed) > 1 else ''}{shown}"


_TYPE_TESTS = {
    "null": "{v} is None",
    "boolean": "type({v}) is bool",
    "string": "type({v}) is str",
    "array": "type({v}) is list",
    "object": "type({v}) is dict",
    "number": "type({v}) in (int, float)",
    "integer": "(type({v}) is int or (type({v}) is float and {v}.is_integer()))",
}
_GUARDS = {"string": "str", "array": "list", "object": "dict"}


class _CheckCompiler:
    """Turns the recording schema into the source of one plain Python function.

    jsonschema's own validator costs about a millisecond per session line, far
    too slow for 100,000-line recordings. This implements exactly the keywords
    the schema uses and refuses to compile any other, so a rule added to the
    schema can never be skipped silently; a test checks it agrees with jsonschema.
    The generated function returns None, or (path, message) for the first rule broken.
    """

    ANNOTATIONS = frozenset(
        {"$schema", "$id", "$defs", "$comment", "title", "description", "format", "examples"}
    )
    KEYWORDS = frozenset(
        {"type", "const", "enum", "minLength", "pattern", "required", "properties", "items"}
        | {"$ref", "anyOf", "if", "then", "else"}
    )

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.namespace: dict[str, Any] = {
            "show_value": show_value,
            "_json_equal": _json_equal,
            "_any_of": _any_of,
            "_must_be": _must_be,
            "_wrong_type": _wrong_type,
        }
        self.sources: list[str] = []
        self.counter = 0
        self.resolving: list[str] = []

    def compile(self) -> _Check:
        name = self._function(self.root, boolean=False)
        source = "\n\n".join(self.sources)
        # The source is built here from the schema shipped in the package, never from input.
        exec(compile(source, "<certmatch recording schema>", "exec"), self.namespace)  # noqa: S102
        check: _Check = self.namespace[name]
        return check

    def _name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def _constant(self, value: Any) -> str:
        name = self._name("_c")
        self.namespace[name] = value
        return name

    def _function(self, node: Any, *, boolean: bool) -> str:
        """Emit a function checking ``node``; boolean ones return True/False, no messages."""
        name = self._name("_is" if boolean else "_check")
        lines = [f"def {name}(v):"]
        lines += self._statements(node, "v", [], 1, boolean)
        lines.append("    return True" if boolean else "    return None")
        self.sources.append("\n".join(lines))
        return name

    def _statements(
        self, node: Any, var: str, path: list[str], depth: int, boolean: bool
    ) -> list[str]:
        pad = "    " * depth

        def fail(message: str) -> str:
            where = f"({', '.join(path)},)" if path else "()"
            return "return False" if boolean else f"return ({where}, {message})"

        if node is True:
            return []
        if node is False:
            return [f"{pad}{fail(repr('no value is allowed here'))}"]
        unknown = node.keys() - self.KEYWORDS - self.ANNOTATIONS
        if unknown:
            raise ValueError(
                f"the recording schema uses {sorted(unknown)}, which certmatch's line check "
                "does not implement; teach _CheckCompiler these keywords"
            )
        out: list[str] = []
        known_type: str | None = None

        def guarded(python_type: str, body: list[str]) -> list[str]:
            # Keywords like "properties" apply only to values of their type.
            if not body or known_type == python_type:
                return body
            inner = ["    " + line for line in body]
            return [f"{pad}if type({var}) is {python_type}:", *inner]

        if "type" in node:
            names = [node["type"]] if isinstance(node["type"], str) else list(node["type"])
            test = " or ".join(_TYPE_TESTS[n].format(v=var) for n in names)
            expected = repr(" or ".join(names))
            out.append(f"{pad}if not ({test}):")
            out.append(f"{pad}    {fail(f'_wrong_type({var}, {expected})')}")
            if len(names) == 1:
                known_type = _GUARDS.get(names[0])
        for keyword in ("const", "enum"):
            if keyword in node:
                allowed = tuple([node["const"]] if keyword == "const" else node["enum"])
                shown = self._constant(allowed)
                if all(type(a) is str for a in allowed):
                    test = f"type({var}) is str and {var} in {self._constant(frozenset(allowed))}"
                else:
                    test = f"any(_json_equal({var}, a) for a in {shown})"
                out.append(f"{pad}if not ({test}):")
                out.append(f"{pad}    {fail(f'_must_be({var}, {shown})')}")
        string_body: list[str] = []
        if "minLength" in node:
            minimum = int(node["minLength"])
            string_body.append(f"{pad}if len({var}) < {minimum}:")
            message = f"f'{{show_value({var})}} is too short (at least {minimum} characters)'"
            string_body.append(f"{pad}    {fail(message)}")
        if "pattern" in node:
            search = self._constant(re.compile(node["pattern"]).search)  # jsonschema: re.search
            # Said in the schema's own words where it has them, not as a regular expression.
            form = _first_sentence(node.get("description", ""))
            if form:
                wanted = self._constant(f"is not in the expected form: {form}")
            else:
                wanted = self._constant(f"does not match the pattern {node['pattern']}")
            string_body.append(f"{pad}if {search}({var}) is None:")
            message = f"f'{{show_value({var})}} {{{wanted}}}'"
            string_body.append(f"{pad}    {fail(message)}")
        out += guarded("str", string_body)
        object_body: list[str] = []
        if "required" in node:
            names = list(node["required"])
            wanted = self._constant(frozenset(names))
            ordered = self._constant(tuple(names))
            object_body.append(f"{pad}if not {wanted} <= {var}.keys():")
            message = (
                f"'missing required field(s): ' + ', '.join(n for n in {ordered} if n not in {var})"
            )
            object_body.append(f"{pad}    {fail(message)}")
        if "properties" in node:
            for key, sub in node["properties"].items():
                item = self._name("p")
                object_body.append(f"{pad}if {key!r} in {var}:")
                object_body.append(f"{pad}    {item} = {var}[{key!r}]")
                body = self._statements(sub, item, [*path, repr(key)], depth + 1, boolean)
                object_body += body or [f"{pad}    pass"]
        out += guarded("dict", object_body)
        if "items" in node:
            index, item = self._name("i"), self._name("x")
            body = self._statements(node["items"], item, [*path, index], depth + 1, boolean)
            if body:
                loop = [f"{pad}for {index}, {item} in enumerate({var}):", *body]
                out += guarded("list", loop)
        if "$ref" in node:
            out += self._statements(self._resolve(node["$ref"]), var, path, depth, boolean)
            self.resolving.pop()
        if "anyOf" in node:
            alternatives = tuple(self._function(a, boolean=False) for a in node["anyOf"])
            listed = f"({', '.join(alternatives)},)"
            failure = self._name("f")
            out.append(f"{pad}{failure} = _any_of({var}, {listed})")
            out.append(f"{pad}if {failure} is not None:")
            where = f"({', '.join(path)},)" if path else "()"
            out.append(
                f"{pad}    "
                + ("return False" if boolean else f"return ({where} + {failure}[0], {failure}[1])")
            )
        if "if" in node:
            test_name = self._function(node["if"], boolean=True)
            then = self._statements(node.get("then", True), var, path, depth + 1, boolean)
            otherwise = self._statements(node.get("else", True), var, path, depth + 1, boolean)
            out.append(f"{pad}if {test_name}({var}):")
            out += then or [f"{pad}    pass"]
            if otherwise:
                out.append(f"{pad}else:")
                out += otherwise
        return out

    def _resolve(self, ref: str) -> Any:
        """The node a local ``#/...`` reference points to; refs are inlined, so no cycles."""
        if not ref.startswith("#/"):
            raise ValueError(f"the recording schema refers outside itself ({ref})")
        if ref in self.resolving:
            raise ValueError(f"the recording schema refers to itself in a loop ({ref})")
        self.resolving.append(ref)
        target: Any = self.root
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        return target


# --- reading ---------------------------------------------------------------------------------
