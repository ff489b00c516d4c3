//! The request handler: one packet in, one decision out. Pure and total: any byte string gives
//! an [`Outcome`] without panicking (the fuzz test in tests/dns.rs holds it to that).
//!
//! - Too short to carry a header, or a response (QR set): dropped, so that two resolvers can
//!   never ping-pong.
//! - Not a standard query: NOTIMP. Not exactly one question, or counts no query carries
//!   (answers, or more than a few records in the other sections), or undecodable: FORMERR,
//!   checked on the raw header before decoding so that a 12-byte packet claiming 65,535
//!   records costs nothing.
//! - EDNS version above 0: BADVERS. An EDNS query gets an OPT record back; the UDP answer fits
//!   the client's advertised size (512 bytes without EDNS), else it is sent with TC set and no
//!   answers, and the client retries over TCP.
//! - A, AAAA, ANY and PTR for the project's names are answered here, authoritatively; other
//!   types of a project name get an empty NOERROR (the name exists). Everything else is
//!   forwarded when the namespace has upstreams, and REFUSED when it has none.

use super::{parse_arpa, NsView, Snapshot};
use hickory_proto::op::{Edns, Message, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use std::net::IpAddr;

/// The largest UDP answer we send, whatever the client advertises.
pub const MAX_UDP: usize = 4096;
/// Our EDNS buffer size (the largest query we read).
pub const EDNS_PAYLOAD: u16 = 4096;
/// A query has no business carrying more records than this in authority or additional.
const MAX_EXTRA_RECORDS: u16 = 8;

/// What to do with a packet.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Send this back.
    Reply(Vec<u8>),
    /// Ask the namespace's upstreams (the packet is forwarded as it is, under a new ID).
    Forward,
    /// Say nothing.
    Drop,
}

/// The transport a query came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What to do with a packet whose reply, if any, [`respond`] wrote into the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send the buffer back.
    Reply,
    /// Ask the namespace's upstreams.
    Forward,
    /// Say nothing.
    Drop,
}

/// Handle one query that arrived in namespace `ns`.
pub fn handle(snap: &Snapshot, ns: &str, packet: &[u8], transport: Transport) -> Outcome {
    let mut out = Vec::new();
    match respond(snap, snap.namespaces.get(ns), packet, transport, &mut out) {
        Action::Reply => Outcome::Reply(out),
        Action::Forward => Outcome::Forward,
        Action::Drop => Outcome::Drop,
    }
}

/// [`handle`] for the server's loop: the namespace's view is looked up once per batch by the
/// caller (`None`: a namespace the records do not know), and the reply is written into `out`
/// (cleared first), a buffer reused from query to query.
pub fn respond(
    snap: &Snapshot,
    view: Option<&NsView>,
    packet: &[u8],
    transport: Transport,
    out: &mut Vec<u8>,
) -> Action {
    out.clear();
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        return Action::Drop;
    }
    let count = |i: usize| u16::from_be_bytes([packet[i], packet[i + 1]]);
    let opcode = (packet[2] >> 3) & 0x0f;
    if opcode != 0 {
        header_only_into(out, packet, ResponseCode::NotImp);
        return Action::Reply;
    }
    if count(4) != 1
        || count(6) != 0
        || count(8) > MAX_EXTRA_RECORDS
        || count(10) > MAX_EXTRA_RECORDS
    {
        header_only_into(out, packet, ResponseCode::FormErr);
        return Action::Reply;
    }
    if let Some(view) = view {
        if fast_path(snap, view, packet, out) {
            return Action::Reply;
        }
    }
    // The fast path may have left a reply too big for the client here.
    out.clear();
    match general(snap, view, packet, transport) {
        Outcome::Reply(r) => {
            *out = r;
            Action::Reply
        }
        Outcome::Forward => Action::Forward,
        Outcome::Drop => Action::Drop,
    }
}

/// Any query that passed the header checks, decoded with hickory-proto.
fn general(snap: &Snapshot, view: Option<&NsView>, packet: &[u8], transport: Transport) -> Outcome {
    let Ok(req) = Message::from_vec(packet) else {
        return Outcome::Reply(header_only(packet, ResponseCode::FormErr));
    };
    let Some(view) = view else {
        return Outcome::Reply(header_only(packet, ResponseCode::Refused));
    };
    let forwards = !view.upstreams.is_empty();
    let Some(query) = req.queries.first() else {
        return Outcome::Reply(header_only(packet, ResponseCode::FormErr));
    };
    let mut resp = Message::response(req.metadata.id, OpCode::Query);
    resp.metadata = Metadata::response_from_request(&req.metadata);
    resp.metadata.recursion_available = forwards;
    resp.add_query(query.clone());
    if let Some(edns) = &req.edns {
        let mut e = Edns::new();
        e.set_max_payload(EDNS_PAYLOAD);
        resp.set_edns(e);
        if edns.version() > 0 {
            resp.metadata.response_code = ResponseCode::BADVERS;
            return finish(resp, &req, transport);
        }
    }
    let class = query.query_class();
    if class != DNSClass::IN && class != DNSClass::ANY {
        return refuse_or_forward(resp, &req, transport, forwards);
    }
    let qname = query.name();
    let name = lower_name(qname);
    let qtype = query.query_type();

    if qtype == RecordType::PTR {
        if let Some(ip) = parse_arpa(&name) {
            return match snap.reverse(view, ip) {
                Ok(names) => {
                    resp.metadata.authoritative = true;
                    for n in names {
                        if let Ok(target) = Name::from_ascii(format!("{n}.")) {
                            resp.add_answer(Record::from_rdata(
                                qname.clone(),
                                super::STABLE_TTL,
                                RData::PTR(PTR(target)),
                            ));
                        }
                    }
                    finish(resp, &req, transport)
                }
                Err(ours) if ours || locally_served(ip) => {
                    resp.metadata.authoritative = true;
                    resp.metadata.response_code = ResponseCode::NXDomain;
                    finish(resp, &req, transport)
                }
                Err(_) => refuse_or_forward(resp, &req, transport, forwards),
            };
        }
    }
    let Some(entry) = snap.lookup(view, &name) else {
        return refuse_or_forward(resp, &req, transport, forwards);
    };
    resp.metadata.authoritative = true;
    let want_v4 = matches!(qtype, RecordType::A | RecordType::ANY);
    let want_v6 = matches!(qtype, RecordType::AAAA | RecordType::ANY);
    let mut addrs: Vec<IpAddr> = entry
        .addrs
        .iter()
        .copied()
        .filter(|a| (a.is_ipv4() && want_v4) || (a.is_ipv6() && want_v6))
        .collect();
    if addrs.len() > 1 {
        fastrand::shuffle(&mut addrs);
    }
    for a in addrs {
        let rdata = match a {
            IpAddr::V4(v4) => RData::A(A(v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
        };
        resp.add_answer(Record::from_rdata(qname.clone(), entry.ttl, rdata));
    }
    finish(resp, &req, transport)
}

/// The common query, answered without decoding it into a [`Message`]: one question, A or
/// AAAA, class IN, for a name of the project, with no EDNS or a plain EDNS(0) OPT record and
/// nothing else. Anything else (or an answer that would not fit in 512 bytes, or the client's
/// EDNS size) returns false and takes the general path, which gives the same answer. dnsperf
/// showed the general path's decoding and encoding to cost about as much as the two system
/// calls of a query, so this path exists; it writes straight into `out` and allocates nothing.
fn fast_path(snap: &Snapshot, view: &NsView, p: &[u8], out: &mut Vec<u8>) -> bool {
    let count = |i: usize| u16::from_be_bytes([p[i], p[i + 1]]);
    let arcount = count(10);
    if arcount > 1 {
        return false;
    }
    // The name, lower-cased into a buffer as "label.label".
    let mut name = [0u8; 256];
    let mut len = 0usize;
    let mut i = 12;
    loop {
        let Some(&l) = p.get(i) else {
            return false;
        };
        let l = usize::from(l);
        if l == 0 {
            i += 1;
            break;
        }
        if l > 63 || len + l + 1 > 255 {
            return false;
        }
        let Some(label) = p.get(i + 1..i + 1 + l) else {
            return false;
        };
        if len > 0 {
            name[len] = b'.';
            len += 1;
        }
        for &b in label {
            if b == b'.' || !b.is_ascii_graphic() {
                return false;
            }
            name[len] = b.to_ascii_lowercase();
            len += 1;
        }
        i += 1 + l;
    }
    let question_end = i + 4;
    let Some(q) = p.get(i..question_end) else {
        return false;
    };
    let qtype = u16::from_be_bytes([q[0], q[1]]);
    if u16::from_be_bytes([q[2], q[3]]) != 1 || (qtype != 1 && qtype != 28) {
        return false;
    }
    let mut limit = 512usize;
    let edns = arcount == 1;
    if edns {
        // Root name, type OPT, payload size, extended rcode 0, version 0, flags, rdata.
        let Some(o) = p.get(question_end..question_end + 11) else {
            return false;
        };
        if o[0] != 0 || o[1..3] != [0, 41] || o[5] != 0 || o[6] != 0 {
            return false;
        }
        let rdlen = usize::from(u16::from_be_bytes([o[9], o[10]]));
        if question_end + 11 + rdlen != p.len() {
            return false;
        }
        limit = usize::from(u16::from_be_bytes([o[3], o[4]])).clamp(512, MAX_UDP);
    } else if question_end != p.len() {
        return false;
    }
    let Ok(name) = std::str::from_utf8(&name[..len]) else {
        return false;
    };
    let Some(entry) = snap.lookup(view, name) else {
        return false;
    };
    let v4 = qtype == 1;
    out.clear();
    out.extend_from_slice(&p[..2]);
    // QR, opcode 0, AA, RD copied; RA when the namespace forwards; CD copied; NOERROR.
    out.push(0x84 | (p[2] & 0x01));
    out.push(if view.upstreams.is_empty() { 0 } else { 0x80 } | (p[3] & 0x10));
    out.extend_from_slice(&1u16.to_be_bytes());
    let ancount_at = out.len();
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&u16::from(edns).to_be_bytes());
    out.extend_from_slice(&p[12..question_end]);
    let answers_at = out.len();
    let mut answers = 0usize;
    for a in &entry.addrs {
        if a.is_ipv4() != v4 {
            continue;
        }
        out.extend_from_slice(&[0xc0, 0x0c]);
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&entry.ttl.to_be_bytes());
        match a {
            IpAddr::V4(v4) => {
                out.extend_from_slice(&4u16.to_be_bytes());
                out.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                out.extend_from_slice(&16u16.to_be_bytes());
                out.extend_from_slice(&v6.octets());
            }
        }
        answers += 1;
    }
    let Ok(ancount) = u16::try_from(answers) else {
        return false;
    };
    out[ancount_at..ancount_at + 2].copy_from_slice(&ancount.to_be_bytes());
    // Every record of one type has the same size: shuffle them as fixed-size chunks.
    let record = if v4 { 16 } else { 28 };
    shuffle_records(&mut out[answers_at..], record);
    if edns {
        out.extend_from_slice(&[0, 0, 41]);
        out.extend_from_slice(&EDNS_PAYLOAD.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    out.len() <= limit
}

/// Put the `size`-byte records of `records` in a random order (Fisher-Yates), so that clients
/// that take the first address spread over a service's replicas.
fn shuffle_records(records: &mut [u8], size: usize) {
    let n = records.len() / size;
    for i in (1..n).rev() {
        let j = fastrand::usize(..=i);
        if j != i {
            let (low, high) = records.split_at_mut(i * size);
            low[j * size..(j + 1) * size].swap_with_slice(&mut high[..size]);
        }
    }
}

/// Reverse zones no public server answers (RFC 6303): private, loopback, link-local and
/// unspecified addresses, unique local IPv6. Forwarding them only waits for a timeout (Python's
/// http.server, for one, looks up `::` before it listens), so they get NXDOMAIN here.
fn locally_served(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_private() || v4.is_loopback() || v4.is_link_local() || v4.is_unspecified()
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

fn refuse_or_forward(mut resp: Message, req: &Message, t: Transport, forwards: bool) -> Outcome {
    if forwards {
        return Outcome::Forward;
    }
    resp.metadata.response_code = ResponseCode::Refused;
    finish(resp, req, t)
}

/// Encode, truncating to what the transport and the client allow.
fn finish(mut resp: Message, req: &Message, transport: Transport) -> Outcome {
    let limit = match transport {
        Transport::Tcp => usize::from(u16::MAX),
        Transport::Udp => req
            .edns
            .as_ref()
            .map_or(512, |e| usize::from(e.max_payload()).clamp(512, MAX_UDP)),
    };
    match resp.to_vec() {
        Ok(bytes) if bytes.len() <= limit => Outcome::Reply(bytes),
        Ok(_) => {
            resp.answers.clear();
            resp.metadata.truncation = true;
            resp.to_vec().map_or(Outcome::Drop, Outcome::Reply)
        }
        Err(_) => Outcome::Drop,
    }
}

/// The query name in lower case, without the trailing dot.
pub fn lower_name(name: &Name) -> String {
    let mut s = name.to_lowercase().to_ascii();
    if s.ends_with('.') {
        s.pop();
    }
    s
}

/// A 12-byte answer: the query's ID, opcode and RD, QR and RA set, the given code, no sections.
pub fn header_only(packet: &[u8], code: ResponseCode) -> Vec<u8> {
    let mut h = Vec::with_capacity(12);
    header_only_into(&mut h, packet, code);
    h
}

/// [`header_only`], written into `out` (cleared first).
fn header_only_into(out: &mut Vec<u8>, packet: &[u8], code: ResponseCode) {
    out.clear();
    out.extend_from_slice(&packet[..2]);
    out.push(0x80 | (packet[2] & 0x79)); // QR, opcode, RD
    out.push(0x80 | (u16::from(code) & 0x0f) as u8); // RA, rcode
    out.extend_from_slice(&[0; 8]);
}

/// SERVFAIL for a query (the upstreams failed): the question is copied when it decodes.
pub fn servfail(packet: &[u8]) -> Vec<u8> {
    if packet.len() < 12 {
        return Vec::new();
    }
    if let Ok(req) = Message::from_vec(packet) {
        let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
        resp.metadata = Metadata::response_from_request(&req.metadata);
        resp.metadata.recursion_available = true;
        resp.metadata.response_code = ResponseCode::ServFail;
        resp.add_queries(req.queries.iter().cloned());
        if req.edns.is_some() {
            let mut e = Edns::new();
            e.set_max_payload(EDNS_PAYLOAD);
            resp.set_edns(e);
        }
        if let Ok(b) = resp.to_vec() {
            return b;
        }
    }
    header_only(packet, ResponseCode::ServFail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::daemon::{DaemonConfig, NamespaceView, NetworkView, Upstream};
    use hickory_proto::op::Query;

    fn snap() -> Snapshot {
        let mut cfg = DaemonConfig::new(crate::project_name::ProjectName::new("p").unwrap());
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let mut front = NetworkView {
            names: vec!["front".into(), "p_front".into()],
            subnets: vec!["10.1.0.0/24".parse().unwrap()],
            ..Default::default()
        };
        front.records.insert("web".into(), vec![ip("10.1.0.100")]);
        front
            .records
            .insert("tasks.web".into(), vec![ip("10.1.0.2"), ip("10.1.0.3")]);
        front.records.insert("p-web-1".into(), vec![ip("10.1.0.2")]);
        front.stable.insert("p-web-1".into());
        front.reverse.insert(ip("10.1.0.2"), vec!["p-web-1".into()]);
        let big: Vec<IpAddr> = (2..60).map(|i| ip(&format!("10.1.0.{i}"))).collect();
        front.records.insert("tasks.big".into(), big);
        let mut back = NetworkView {
            names: vec!["back".into()],
            subnets: vec!["10.2.0.0/24".parse().unwrap()],
            internal: true,
            ..Default::default()
        };
        back.records.insert("db".into(), vec![ip("10.2.0.5")]);
        cfg.networks.insert("front".into(), front);
        cfg.networks.insert("back".into(), back);
        cfg.namespaces.insert(
            "p-client-1".into(),
            NamespaceView {
                service: "client".into(),
                replica: 1,
                networks: vec!["front".into()],
                upstreams: vec![Upstream {
                    addr: "198.18.0.1:53".parse().unwrap(),
                    from_host: false,
                }],
            },
        );
        cfg.namespaces.insert(
            "p-db-1".into(),
            NamespaceView {
                service: "db".into(),
                replica: 1,
                networks: vec!["back".into()],
                upstreams: vec![],
            },
        );
        Snapshot::compile(&cfg, 1)
    }

    fn query(name: &str, t: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        if let Some(p) = edns {
            let mut e = Edns::new();
            e.set_max_payload(p);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn reply(o: Outcome) -> Message {
        match o {
            Outcome::Reply(b) => Message::from_vec(&b).unwrap(),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn ips(m: &Message) -> Vec<String> {
        let mut v: Vec<String> = m
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::A(a) => a.0.to_string(),
                RData::AAAA(a) => a.0.to_string(),
                RData::PTR(p) => p.0.to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn answers_names_of_shared_networks_only() {
        let s = snap();
        let q = query("web.", RecordType::A, None);
        let m = reply(handle(&s, "p-client-1", &q, Transport::Udp));
        assert_eq!(ips(&m), ["10.1.0.100"]);
        assert!(m.metadata.authoritative && m.metadata.recursion_available);
        assert_eq!(m.answers[0].ttl, crate::daemon::resolver::SCALING_TTL);
        let m = reply(handle(
            &s,
            "p-client-1",
            &query("TASKS.Web.", RecordType::A, None),
            Transport::Udp,
        ));
        assert_eq!(ips(&m), ["10.1.0.2", "10.1.0.3"]);
        let m = reply(handle(
            &s,
            "p-client-1",
            &query("p-web-1.p_front.", RecordType::A, None),
            Transport::Udp,
        ));
        assert_eq!(ips(&m), ["10.1.0.2"]);
        assert_eq!(m.answers[0].ttl, crate::daemon::resolver::STABLE_TTL);
        // db is on `back` only: the client forwards the name, as any other.
        assert_eq!(
            handle(
                &s,
                "p-client-1",
                &query("db.", RecordType::A, None),
                Transport::Udp
            ),
            Outcome::Forward
        );
        // db itself has no upstream: REFUSED, fast.
        let m = reply(handle(
            &s,
            "p-db-1",
            &query("example.com.", RecordType::A, None),
            Transport::Udp,
        ));
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        assert!(!m.metadata.recursion_available);
        // A name that exists but has no AAAA: NODATA.
        let m = reply(handle(
            &s,
            "p-client-1",
            &query("web.", RecordType::AAAA, None),
            Transport::Udp,
        ));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
    }

    #[test]
    fn reverse_lookups() {
        let s = snap();
        let m = reply(handle(
            &s,
            "p-client-1",
            &query("2.0.1.10.in-addr.arpa.", RecordType::PTR, None),
            Transport::Udp,
        ));
        assert_eq!(ips(&m), ["p-web-1."]);
        let m = reply(handle(
            &s,
            "p-client-1",
            &query("77.0.1.10.in-addr.arpa.", RecordType::PTR, None),
            Transport::Udp,
        ));
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(
            handle(
                &s,
                "p-client-1",
                &query("5.2.0.192.in-addr.arpa.", RecordType::PTR, None),
                Transport::Udp
            ),
            Outcome::Forward
        );
        // Private addresses that are not ours: answered here (RFC 6303), never forwarded.
        for name in ["5.0.2.10.in-addr.arpa.", "0.0.0.0.in-addr.arpa."] {
            let m = reply(handle(
                &s,
                "p-client-1",
                &query(name, RecordType::PTR, None),
                Transport::Udp,
            ));
            assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
        }
    }

    #[test]
    fn truncation_and_edns() {
        let s = snap();
        let q = query("tasks.big.", RecordType::A, None);
        let m = reply(handle(&s, "p-client-1", &q, Transport::Udp));
        assert!(m.metadata.truncation && m.answers.is_empty());
        let m = reply(handle(&s, "p-client-1", &q, Transport::Tcp));
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 58);
        let q = query("tasks.big.", RecordType::A, Some(1232));
        let m = reply(handle(&s, "p-client-1", &q, Transport::Udp));
        assert!(!m.metadata.truncation && m.edns.is_some());
        assert_eq!(m.answers.len(), 58);
        // EDNS version 1: BADVERS.
        let mut bad = Message::from_vec(&q).unwrap();
        bad.edns.as_mut().unwrap().set_version(1);
        let m = reply(handle(
            &s,
            "p-client-1",
            &bad.to_vec().unwrap(),
            Transport::Udp,
        ));
        // 16 is BADVERS in a response to an OPT (hickory names the code BADSIG).
        assert_eq!(u16::from(m.metadata.response_code), 16);
    }

    fn fast(s: &Snapshot, view: &NsView, q: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        fast_path(s, view, q, &mut out).then_some(out)
    }

    #[test]
    fn fast_path_answers_as_the_general_path() {
        let s = snap();
        let view = s.namespaces.get("p-client-1").unwrap();
        for (name, t, edns) in [
            ("web.", RecordType::A, None),
            ("WEB.front.", RecordType::A, Some(1232)),
            ("p-web-1.", RecordType::A, Some(512)),
            ("web.", RecordType::AAAA, None),
            ("tasks.web.", RecordType::A, None),
        ] {
            let q = query(name, t, edns);
            let fast = fast(&s, view, &q).expect("the fast path takes it");
            let fast = Message::from_vec(&fast).unwrap();
            let Outcome::Reply(general) = super::general(&s, Some(view), &q, Transport::Udp) else {
                panic!("no reply");
            };
            let general = Message::from_vec(&general).unwrap();
            assert_eq!(fast.metadata, general.metadata, "{name}");
            assert_eq!(ips(&fast), ips(&general), "{name}");
            assert_eq!(fast.queries, general.queries, "{name}");
            assert_eq!(fast.edns.is_some(), edns.is_some(), "{name}");
            assert_eq!(
                fast.answers.first().map(|r| r.ttl),
                general.answers.first().map(|r| r.ttl)
            );
        }
        // Not taken: PTR, ANY, unknown names, two records in additional.
        for (name, t) in [
            ("2.0.1.10.in-addr.arpa.", RecordType::PTR),
            ("web.", RecordType::ANY),
            ("nope.", RecordType::A),
        ] {
            assert!(fast(&s, view, &query(name, t, None)).is_none(), "{name}");
        }
        // A large answer without EDNS: left to the general path, which truncates.
        assert!(fast(&s, view, &query("tasks.big.", RecordType::A, None)).is_none());
    }

    #[test]
    fn fast_path_shuffles_whole_records() {
        let s = snap();
        let view = s.namespaces.get("p-client-1").unwrap();
        let q = query("tasks.web.", RecordType::A, None);
        let mut orders = std::collections::HashSet::new();
        // Both orders of two records come up; the chance that one never does in 200 answers
        // is 2^-199.
        for _ in 0..200 {
            let m = Message::from_vec(&fast(&s, view, &q).unwrap()).unwrap();
            let order: Vec<String> = m.answers.iter().map(|r| format!("{:?}", r.data)).collect();
            assert_eq!(order.len(), 2);
            orders.insert(order);
        }
        assert_eq!(orders.len(), 2);
    }

    #[test]
    fn respond_overwrites_a_used_buffer() {
        let s = snap();
        let view = s.namespaces.get("p-client-1");
        let mut out = vec![0xff; 700];
        for (name, t) in [
            ("web.", RecordType::A),
            ("2.0.1.10.in-addr.arpa.", RecordType::PTR),
            ("nope.", RecordType::A),
        ] {
            let q = query(name, t, None);
            let action = respond(&s, view, &q, Transport::Udp, &mut out);
            match handle(&s, "p-client-1", &q, Transport::Udp) {
                Outcome::Reply(r) => {
                    assert_eq!(action, Action::Reply, "{name}");
                    assert_eq!(out, r, "{name}");
                }
                Outcome::Forward => assert_eq!(action, Action::Forward, "{name}"),
                Outcome::Drop => assert_eq!(action, Action::Drop, "{name}"),
            }
        }
        let mut bad = query("web.", RecordType::A, None);
        bad[2] |= 2 << 3;
        assert_eq!(
            respond(&s, view, &bad, Transport::Udp, &mut out),
            Action::Reply
        );
        assert_eq!(out.len(), 12);
    }

    #[test]
    fn malformed_packets() {
        let s = snap();
        assert_eq!(
            handle(&s, "p-client-1", &[1, 2, 3], Transport::Udp),
            Outcome::Drop
        );
        let mut q = query("web.", RecordType::A, None);
        q[2] |= 0x80;
        assert_eq!(handle(&s, "p-client-1", &q, Transport::Udp), Outcome::Drop);
        let mut q = query("web.", RecordType::A, None);
        q[5] = 2;
        let m = reply(handle(&s, "p-client-1", &q, Transport::Udp));
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        let q = query("web.", RecordType::A, None);
        let m = reply(handle(&s, "p-client-1", &q[..q.len() - 2], Transport::Udp));
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        let mut q = query("web.", RecordType::A, None);
        q[2] |= 2 << 3;
        let m = reply(handle(&s, "p-client-1", &q, Transport::Udp));
        assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
        let m = reply(handle(
            &s,
            "nobody",
            &query("web.", RecordType::A, None),
            Transport::Udp,
        ));
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    }
}
