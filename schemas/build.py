#!/usr/bin/env python3
"""Build netcompose.schema.json: the Compose schema plus netcompose's extension keys.

The Compose specification's schema (compose-spec.json, copied from compose-spec/compose-spec)
already allows any `x-*` key and says nothing about its value. This script takes it as it is
and adds typed definitions for the extensions netcompose reads:

  services.*.x-policy, networks.*.x-policy   ingress/egress allow/deny lists
  services.*.x-run                           a command string or an argv list
  services.*.x-qos, services.*.networks.*.x-qos  shaping (rate, ceil, burst) and faults
  x-checks (top level)                       reachability assertions
  x-metrics (top level)                      where the daemon serves Prometheus metrics

so that editors can complete and check them. Regenerate after updating compose-spec.json:

    python3 schemas/build.py            # writes schemas/netcompose.schema.json
    python3 schemas/build.py --check    # exit 1 if the committed file is stale

Only the standard library is used, so it runs anywhere python3 does.
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "compose-spec.json"
TARGET = HERE / "netcompose.schema.json"

# Values are checked before interpolation (as an editor sees the file), so a `$VAR` or
# `${VAR:-x}` must be accepted wherever netcompose would interpolate it.
INTERPOLATED = {
    "type": "string",
    "pattern": r"\$",
    "description": "A value set by interpolation, such as ${VAR} or ${VAR:-default}.",
}

# One x-policy entry, as parse_policy_entry (src/load/decode/ext.rs) reads it: a peer, then an
# optional :PORT[-END], then an optional /tcp or /udp (a protocol needs a port).
_NAME = r"[A-Za-z0-9._-]+"  # a service name, or a bare IPv4 address
_V4_CIDR = r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}/(?:[0-9]|[12][0-9]|3[0-2])"
_V6 = r"[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*(?:/[0-9]{1,3})?"
_PORT = r":[0-9]{1,5}(?:-[0-9]{1,5})?(?:/(?:tcp|udp))?"
POLICY_ENTRY_PATTERN = (
    rf"^(?:(?:{_NAME}|{_V4_CIDR})(?:{_PORT})?"  # web, web:80/tcp, 10.0.0.0/8:53/udp
    rf"|{_V6}"  # fd00::/64 (no port: the colons are the address's)
    rf"|\[{_V6}\](?:{_PORT})?"  # [fd00::/64]:443
    r"|.*\$.*)$"  # interpolated
)

EXTENSIONS = {
    "x_policy": {
        "type": ["object", "null"],
        "description": (
            "netcompose firewall policy: what may reach (ingress) and what may be reached "
            "from (egress) this service's replicas, or every endpoint of this network. "
            "Enforced with nftables in each replica's namespace."
        ),
        "properties": {
            "ingress": {
                "$ref": "#/definitions/x_policy_rules",
                "description": "Traffic arriving at the replicas.",
            },
            "egress": {
                "$ref": "#/definitions/x_policy_rules",
                "description": "Traffic the replicas send.",
            },
        },
        "additionalProperties": False,
    },
    "x_policy_rules": {
        "type": ["object", "null"],
        "description": "Allow and deny lists for one direction.",
        "properties": {
            "allow": {
                "$ref": "#/definitions/x_policy_entries",
                "description": "Peers admitted. With `deny: [0.0.0.0/0]`: these and nothing else.",
            },
            "deny": {
                "$ref": "#/definitions/x_policy_entries",
                "description": "Peers refused.",
            },
        },
        "additionalProperties": False,
    },
    "x_policy_entries": {
        "oneOf": [
            {"$ref": "#/definitions/x_policy_entry"},
            {"type": "array", "items": {"$ref": "#/definitions/x_policy_entry"}},
            {"type": "null"},
        ]
    },
    "x_policy_entry": {
        "type": "string",
        "description": (
            "A peer with an optional port and protocol: a CIDR (10.0.0.0/8), an address "
            "(10.1.2.3, meaning /32), or a service name (web); then optionally :PORT or "
            ":START-END, then optionally /tcp or /udp (tcp when omitted). An IPv6 peer with a "
            "port goes in brackets. Examples: web, web:80/tcp, logs:514/udp, "
            "192.168.1.0/24:53/udp, [fd00::/64]:443, 0.0.0.0/0."
        ),
        "pattern": POLICY_ENTRY_PATTERN,
    },
    "x_run": {
        "description": (
            "A host command run inside each replica's network namespace (netcompose builds "
            "networks, not containers). A string runs through /bin/sh -c; a list is the argv."
        ),
        "oneOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "string"}},
            {"type": "null"},
        ],
    },
    "x_metrics": {
        "type": ["object", "null"],
        "description": (
            "Serve the project's metrics (`netcompose stats` figures, Prometheus text format) "
            "over HTTP at /metrics on a loopback or private address."
        ),
        "properties": {
            "listen": {
                "type": "string",
                "description": "IP:PORT, e.g. 127.0.0.1:9911 or [::1]:9911.",
            },
        },
        "required": ["listen"],
        "additionalProperties": False,
    },
    "x_checks": {
        "type": ["array", "null"],
        "description": "Reachability assertions that `netcompose check` probes with real packets.",
        "items": {"$ref": "#/definitions/x_check"},
    },
    "x_check": {
        "type": "object",
        "description": "One probe: from a service's replicas to a service, an address or the host.",
        "properties": {
            "from": {
                "type": "string",
                "description": "The probing side: a service of this project, or `host`.",
            },
            "to": {
                "type": "string",
                "description": "The target: a service of this project, an IP address, or `host`.",
            },
            "port": {
                "oneOf": [
                    {"type": "integer", "minimum": 1, "maximum": 65535},
                    {"type": "string", "pattern": r"^[0-9]+$"},
                    {"$ref": "#/definitions/x_interpolated"},
                ],
                "description": "The TCP or UDP port; required unless the protocol is icmp.",
            },
            "protocol": {
                "anyOf": [
                    {"enum": ["tcp", "udp", "icmp"]},
                    {"$ref": "#/definitions/x_interpolated"},
                ],
                "description": "tcp (the default with a port), udp, or icmp (the default without).",
            },
            "family": {
                "anyOf": [
                    {"enum": ["ipv4", "ipv6"]},
                    {"$ref": "#/definitions/x_interpolated"},
                ],
                "description": "The address family a service name or `host` is probed over "
                "(default: IPv4 where the target has it).",
            },
            "expect": {
                "anyOf": [
                    {"enum": ["reach", "blocked"]},
                    {"$ref": "#/definitions/x_interpolated"},
                ],
                "description": "reach (the default) or blocked.",
            },
        },
        "required": ["from", "to"],
        "additionalProperties": False,
        # tcp and udp probes need a port to probe.
        "if": {
            "properties": {"protocol": {"enum": ["tcp", "udp"]}},
            "required": ["protocol"],
        },
        "then": {"required": ["port"]},
    },
    "x_qos": {
        "type": ["object", "null"],
        "description": (
            "netcompose QoS and faults for the replicas' links (on a service: every attachment; "
            "on an attachment: that one, overriding the service's keys). Shaping is htb over "
            "netlink; loss is an nftables rule; delay and jitter need the kernel's sch_netem."
        ),
        "properties": {
            "egress": {
                "$ref": "#/definitions/x_qos_shape",
                "description": "What leaves the replica, shaped on its interface.",
            },
            "ingress": {
                "$ref": "#/definitions/x_qos_shape",
                "description": "What enters the replica, shaped on the host-side veth peer "
                "(not on macvlan attachments).",
            },
            "loss": {
                "type": ["string", "integer"],
                "pattern": r"^(?:[0-9]{1,3}%?|.*\$.*)$",
                "description": "Whole percent of the packets leaving the replica to drop: \"20%\".",
            },
            "delay": {
                "type": "string",
                "description": "A netem delay of the packets leaving the replica: 100ms.",
            },
            "jitter": {
                "type": "string",
                "description": "How much the delay varies: 10ms (needs delay).",
            },
        },
        "additionalProperties": False,
    },
    "x_qos_shape": {
        "type": "object",
        "description": "htb shaping of one direction, in tc's units.",
        "properties": {
            "rate": {
                "type": ["string", "integer"],
                "description": "Guaranteed rate: 10mbit, 1gbit, 500kbit, 2mbps (bytes/s).",
            },
            "ceil": {
                "type": ["string", "integer"],
                "description": "The most it may take when there is room (default: rate).",
            },
            "burst": {
                "type": ["string", "integer"],
                "description": "Bytes sent at full speed at once: 64kb (default: 10 ms of ceil).",
            },
        },
        "required": ["rate"],
        "additionalProperties": False,
    },
    "x_interpolated": INTERPOLATED,
}


def ref(name):
    return {"$ref": f"#/definitions/{name}"}


def build(compose):
    schema = dict(compose)
    schema["$id"] = "netcompose.schema.json"
    schema["title"] = "netcompose Compose file"
    schema["description"] = (
        "The Compose specification plus netcompose's extensions (x-policy, x-run, x-qos, x-checks, x-metrics). "
        "Generated by schemas/build.py from compose-spec.json: edit the script, not this file."
    )
    defs = schema["definitions"]
    clashes = sorted(set(defs) & set(EXTENSIONS))
    if clashes:
        sys.exit(f"compose-spec.json now defines {clashes}: rename them in build.py")
    for where in ("service", "network"):
        props = defs[where]["properties"]
        if "x-policy" in props:
            sys.exit(f"compose-spec.json now defines {where}.x-policy: review build.py")
        props["x-policy"] = ref("x_policy")
    defs["service"]["properties"]["x-run"] = ref("x_run")
    defs["service"]["properties"]["x-qos"] = ref("x_qos")
    attachment = defs["service"]["properties"]["networks"]["oneOf"][1]["patternProperties"]
    for entry in attachment.values():
        for shape in entry["oneOf"]:
            if shape.get("type") == "object":
                shape["properties"]["x-qos"] = ref("x_qos")
    schema["properties"]["x-checks"] = ref("x_checks")
    schema["properties"]["x-metrics"] = ref("x_metrics")
    defs.update(EXTENSIONS)
    return schema


def main(argv):
    compose = json.loads(SOURCE.read_text(encoding="utf-8"))
    text = json.dumps(build(compose), indent=2, ensure_ascii=False) + "\n"
    if "--check" in argv:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET.name} is stale: run python3 schemas/build.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
