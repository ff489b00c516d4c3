//! The VXLAN probe's decisions, pure (the thread that sends and answers the frames is
//! `prober.rs`): each agent keeps a probe VXLAN device of its own (a reserved VNI, the
//! node's VXLAN port and underlay address, MTU = the overlay MTU, outer DF set) with one
//! static FDB entry per other live node, and every round sends each peer a small frame and
//! one padded to the overlay MTU, which the peer's agent sends back. Small and full-size back:
//! ok; small only: too big (an MTU blackhole on the way); neither: unreachable (the VXLAN
//! port filtered, the host cut off). Frames carry no IP, so the probe needs no address,
//! route or neighbour entry on the host and cannot collide with the host's networks.

use crate::model::overlay::{OVERHEAD_V4, OVERHEAD_V6};
use crate::state::cluster::{HealthRecord, PeerProbe, ProbeState};
use std::net::IpAddr;
use std::time::Duration;

/// The probe device's VNI (validate refuses it in a file).
pub use crate::ipam::vni::PROBE_VNI;
/// The probe device (one per host: one agent per host).
pub const PROBE_DEVICE: &str = "ncprobe";
/// The payload of the small frame (a minimal Ethernet frame's).
pub const SMALL: usize = 46;
/// A frame's header: Ethernet (14), magic (4), kind (1), sequence (4).
const HEADER: usize = 23;
const ETHERNET: usize = 14;
const MAGIC: [u8; 4] = *b"NCPR";

/// The probe MAC of the node at `underlay`: locally administered, unicast, the IPv4 address
/// itself (unique on an IPv4 underlay), or a hash of the IPv6 address.
pub fn mac_of(underlay: IpAddr) -> [u8; 6] {
    let tail = match underlay {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(v6) => fnv1a(&v6.octets()).to_be_bytes(),
    };
    [0x02, 0x6e, tail[0], tail[1], tail[2], tail[3]]
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h: u32, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// The overlay MTU on this host: the smallest underlay MTU of the live nodes less VXLAN's
/// headers (as the overlays get it).
pub fn overlay_mtu(underlay: IpAddr, mtus: impl IntoIterator<Item = u32>) -> u32 {
    let overhead = match underlay {
        IpAddr::V4(_) => OVERHEAD_V4,
        IpAddr::V6(_) => OVERHEAD_V6,
    };
    mtus.into_iter()
        .min()
        .unwrap_or(1500)
        .saturating_sub(overhead)
}

/// A probe frame's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Reply,
}

/// A probe frame as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub kind: Kind,
    pub seq: u32,
    /// The payload's length (what the frame was padded to, past the Ethernet header).
    pub payload: usize,
}

/// A frame from `src` to `dst` whose payload is `payload` bytes (at least the probe's own
/// header), with [`crate::kernel::l2echo::ETHERTYPE`].
pub fn encode(
    dst: [u8; 6],
    src: [u8; 6],
    kind: Kind,
    seq: u32,
    payload: usize,
    ethertype: u16,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETHERNET + payload.max(HEADER - ETHERNET));
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(&MAGIC);
    f.push(match kind {
        Kind::Request => 1,
        Kind::Reply => 2,
    });
    f.extend_from_slice(&seq.to_be_bytes());
    f.resize(ETHERNET + payload.max(HEADER - ETHERNET), 0);
    f
}

/// A probe frame, or None for anything else.
pub fn decode(frame: &[u8]) -> Option<Frame> {
    if frame.len() < HEADER || frame[14..18] != MAGIC {
        return None;
    }
    let mac = |at: usize| -> Option<[u8; 6]> { frame.get(at..at + 6)?.try_into().ok() };
    let kind = match frame[18] {
        1 => Kind::Request,
        2 => Kind::Reply,
        _ => return None,
    };
    Some(Frame {
        dst: mac(0)?,
        src: mac(6)?,
        kind,
        seq: u32::from_be_bytes(frame.get(19..23)?.try_into().ok()?),
        payload: frame.len() - ETHERNET,
    })
}

/// What one round found on the way to one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Round {
    /// The small frame's round trip, if it came back.
    pub small: Option<Duration>,
    /// The full-size frame's round trip, if it came back.
    pub full: Option<Duration>,
    /// This host's kernel refused to send the full-size frame (EMSGSIZE).
    pub refused: bool,
}

impl Round {
    pub fn state(&self) -> ProbeState {
        match (self.full, self.small) {
            (Some(_), _) => ProbeState::Ok,
            (None, Some(_)) => ProbeState::TooBig,
            (None, None) if self.refused => ProbeState::TooBig,
            (None, None) => ProbeState::Unreachable,
        }
    }
}

/// One peer's state over rounds: a state holds once two rounds in a row agree on it (one
/// lost frame is not a failure, one answer is not a recovery; a peer that just came is not
/// unreachable while its agent sets up its own device).
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    current: Option<PeerProbe>,
    candidate: Option<ProbeState>,
}

impl Tracker {
    /// Take a round in; what the peer now is (None: not decided yet), with the round trip
    /// of the round that decided it: a round trip on a busy host varies a hundredfold from
    /// one round to the next, and writing it each time would write in steady state.
    pub fn observe(&mut self, round: Round) -> Option<PeerProbe> {
        let state = round.state();
        let rtt = round.full.map(|d| d.as_micros() as u64);
        match self.current {
            Some(cur) if cur.state == state => self.candidate = None,
            _ if self.candidate == Some(state) => {
                self.candidate = None;
                self.current = Some(PeerProbe { state, rtt_us: rtt });
            }
            _ => self.candidate = Some(state),
        }
        self.current
    }
}

/// Whether `now` must be written over `published` (None: nothing is): a peer came, went or
/// changed state, the MTU changed, or the probe failed or recovered. Steady state writes nothing.
pub fn worth_writing(published: Option<&HealthRecord>, now: &HealthRecord) -> bool {
    let Some(old) = published else {
        return true;
    };
    old.mtu != now.mtu
        || old.error != now.error
        || old.peers.len() != now.peers.len()
        || old
            .peers
            .iter()
            .zip(&now.peers)
            .any(|((a, pa), (b, pb))| a != b || pa.state != pb.state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn frames_round_trip_and_are_padded() {
        let f = encode([1; 6], [2; 6], Kind::Request, 7, 1450, 0x88b5);
        assert_eq!(f.len(), 1464);
        let back = decode(&f).unwrap();
        assert_eq!(
            back,
            Frame {
                dst: [1; 6],
                src: [2; 6],
                kind: Kind::Request,
                seq: 7,
                payload: 1450
            }
        );
        assert_eq!(
            encode([1; 6], [2; 6], Kind::Reply, 1, SMALL, 0x88b5).len(),
            60
        );
        assert_eq!(decode(&[0u8; 60]), None, "not ours");
    }

    #[test]
    fn macs_and_mtu() {
        assert_eq!(
            mac_of("10.231.0.2".parse().unwrap()),
            [0x02, 0x6e, 10, 231, 0, 2]
        );
        assert_ne!(
            mac_of("fd00::1".parse().unwrap()),
            mac_of("fd00::2".parse().unwrap())
        );
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(overlay_mtu(v4, [1500, 1400]), 1350);
        assert_eq!(overlay_mtu("fd00::1".parse().unwrap(), [1500]), 1430);
    }

    #[test]
    fn a_round_reads_as_ok_too_big_or_unreachable() {
        let ok = Round {
            small: ms(1),
            full: ms(1),
            refused: false,
        };
        assert_eq!(ok.state(), ProbeState::Ok);
        let big = Round {
            small: ms(1),
            ..Default::default()
        };
        assert_eq!(big.state(), ProbeState::TooBig);
        let refused = Round {
            refused: true,
            ..Default::default()
        };
        assert_eq!(refused.state(), ProbeState::TooBig);
        assert_eq!(Round::default().state(), ProbeState::Unreachable);
    }

    #[test]
    fn a_state_takes_two_rounds_in_a_row() {
        let ok = Round {
            small: ms(1),
            full: ms(1),
            refused: false,
        };
        let lost = Round::default();
        let state = |t: &mut Tracker, r| t.observe(r).map(|p| p.state);
        let mut t = Tracker::default();
        assert_eq!(state(&mut t, lost), None, "not decided");
        assert_eq!(state(&mut t, ok), None);
        assert_eq!(state(&mut t, ok), Some(ProbeState::Ok));
        assert_eq!(state(&mut t, lost), Some(ProbeState::Ok), "one lost frame");
        assert_eq!(state(&mut t, ok), Some(ProbeState::Ok));
        assert_eq!(state(&mut t, lost), Some(ProbeState::Ok));
        assert_eq!(state(&mut t, lost), Some(ProbeState::Unreachable));
        assert_eq!(t.observe(ok).unwrap().rtt_us, None, "one answer");
        assert_eq!(t.observe(ok).unwrap().rtt_us, Some(1000));
        let slow = Round {
            small: ms(90),
            full: ms(90),
            refused: false,
        };
        assert_eq!(
            t.observe(slow).unwrap().rtt_us,
            Some(1000),
            "kept from the decision"
        );
    }

    #[test]
    fn steady_state_writes_nothing() {
        let rec = |state, rtt: Option<u64>| HealthRecord {
            mtu: 1450,
            peers: [("n1".to_string(), PeerProbe { state, rtt_us: rtt })].into(),
            error: None,
        };
        let base = rec(ProbeState::Ok, Some(300));
        assert!(worth_writing(None, &base));
        assert!(
            !worth_writing(Some(&base), &rec(ProbeState::Ok, Some(90000))),
            "a round trip alone"
        );
        assert!(!worth_writing(Some(&base), &base));
        assert!(worth_writing(Some(&base), &rec(ProbeState::TooBig, None)));
        let failed = HealthRecord {
            error: Some("VXLAN port taken".into()),
            ..base.clone()
        };
        assert!(worth_writing(Some(&base), &failed));
        let mut more = base.clone();
        more.peers.insert(
            "n2".into(),
            PeerProbe {
                state: ProbeState::Ok,
                rtt_us: Some(300),
            },
        );
        assert!(worth_writing(Some(&base), &more));
    }
}
