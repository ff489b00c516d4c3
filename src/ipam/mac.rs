//! MAC addresses: parsing user-given ones and deriving stable, locally administered ones.

use sha2::{Digest, Sha256};

pub type Mac = [u8; 6];

pub fn parse_mac(s: &str) -> Option<Mac> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(parts) {
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    Some(mac)
}

/// `02:42:ac:11:00:02`. Written digit by digit into one string: a plan of 15,000 endpoints
/// formats as many MACs, and a `format!` per byte cost 7,000 instructions a MAC.
pub fn format_mac(mac: &Mac) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(17);
    for (i, b) in mac.iter().enumerate() {
        if i > 0 {
            text.push(':');
        }
        text.push(char::from(HEX[usize::from(b >> 4)]));
        text.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    text
}

/// A unicast, locally administered MAC derived from `seed` (and a salt to step past
/// collisions): the same seed always gives the same address.
pub fn derive_mac(seed: &str, salt: u32) -> Mac {
    let digest = Sha256::new()
        .chain_update(seed.as_bytes())
        .chain_update(salt.to_be_bytes())
        .finalize();
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&digest[..6]);
    mac[0] = (mac[0] & 0xfc) | 0x02;
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_derive() {
        assert_eq!(
            parse_mac("02:42:AC:11:00:02"),
            Some([2, 0x42, 0xac, 0x11, 0, 2])
        );
        assert_eq!(parse_mac("02:42:ac:11:00"), None);
        let m = derive_mac("p/web/1/front", 0);
        assert_eq!(m, derive_mac("p/web/1/front", 0));
        assert_eq!(m[0] & 0x03, 0x02, "unicast and locally administered");
        assert_ne!(m, derive_mac("p/web/1/front", 1));
        assert_eq!(
            format_mac(&[2, 0x42, 0xac, 0x11, 0, 0xfe]),
            "02:42:ac:11:00:fe"
        );
        let text = format_mac(&m);
        assert_eq!(parse_mac(&text), Some(m), "{text} reads back");
    }
}
