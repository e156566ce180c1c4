//! The byte encoding of stored values: a version byte, then fixed fields.
//!
//! Hand-written rather than derived, so the on-disk format is written down
//! in one place and cannot change by accident when a Rust type does: every
//! value starts with [`VERSION`]; integers are big-endian; a string or list
//! is a `u16` count followed by its items. A decoder reads exactly the bytes
//! a value has (short or trailing bytes are an error), so a damaged value is
//! reported, never half-read. Adding a field means a new version byte and a
//! decoder that still reads the old one.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use peerd_core::{AddressClass, Candidate, CandidateKind};

/// The version byte every value written by this program starts with.
pub(crate) const VERSION: u8 = 1;

/// Builds one value.
pub(crate) struct Enc(Vec<u8>);

impl Enc {
    /// A value of the current [`VERSION`].
    pub(crate) fn new() -> Self {
        Self(vec![VERSION])
    }

    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }

    pub(crate) fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }

    /// A count for a list or string. Callers bound their lengths first;
    /// anything longer is clamped (and the items cut to match by the caller).
    pub(crate) fn count(&mut self, n: usize) -> &mut Self {
        self.u16(u16::try_from(n).unwrap_or(u16::MAX))
    }

    /// A string, cut to at most `u16::MAX` bytes at a character boundary.
    pub(crate) fn str(&mut self, s: &str) -> &mut Self {
        let s = truncate(s, usize::from(u16::MAX));
        self.count(s.len());
        self.bytes(s.as_bytes())
    }

    pub(crate) fn candidate(&mut self, c: &Candidate) -> &mut Self {
        match c.addr {
            SocketAddr::V4(a) => {
                self.u8(4).bytes(&a.ip().octets()).u16(a.port());
            },
            SocketAddr::V6(a) => {
                self.u8(6)
                    .bytes(&a.ip().octets())
                    .u16(a.port())
                    .u32(a.flowinfo())
                    .u32(a.scope_id());
            },
        }
        self.u8(kind_code(c.kind)).u8(class_code(c.class))
    }

    pub(crate) fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Reads one value. Errors are short phrases, put in
/// [`StateError::Undecodable`](crate::StateError::Undecodable) with the table
/// and key by the caller.
pub(crate) struct Dec<'a> {
    buf: &'a [u8],
}

pub(crate) type DecResult<T> = Result<T, String>;

impl<'a> Dec<'a> {
    /// Starts reading `buf`, checking its version byte.
    pub(crate) fn new(buf: &'a [u8]) -> DecResult<Self> {
        let mut d = Self { buf };
        match d.u8().map_err(|_| "empty value".to_owned())? {
            VERSION => Ok(d),
            v => Err(format!(
                "unknown value version {v} (this program writes version {VERSION}; was it made by a newer peerd?)"
            )),
        }
    }

    fn take(&mut self, n: usize) -> DecResult<&'a [u8]> {
        if self.buf.len() < n {
            return Err("value cut short".to_owned());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> DecResult<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> DecResult<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> DecResult<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> DecResult<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> DecResult<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(crate) fn bytes32(&mut self) -> DecResult<[u8; 32]> {
        self.array()
    }

    pub(crate) fn count(&mut self) -> DecResult<usize> {
        Ok(usize::from(self.u16()?))
    }

    pub(crate) fn str(&mut self) -> DecResult<String> {
        let n = self.count()?;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "a string is not UTF-8".to_owned())
    }

    pub(crate) fn bool(&mut self) -> DecResult<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(format!("bad boolean {v}")),
        }
    }

    pub(crate) fn candidate(&mut self) -> DecResult<Candidate> {
        let addr = match self.u8()? {
            4 => {
                let ip = Ipv4Addr::from(self.array::<4>()?);
                SocketAddr::V4(SocketAddrV4::new(ip, self.u16()?))
            },
            6 => {
                let ip = Ipv6Addr::from(self.array::<16>()?);
                let port = self.u16()?;
                let flow = self.u32()?;
                let scope = self.u32()?;
                SocketAddr::V6(SocketAddrV6::new(ip, port, flow, scope))
            },
            f => return Err(format!("bad address family {f}")),
        };
        let kind = self.u8()?;
        let kind = CandidateKind::ALL
            .into_iter()
            .find(|k| kind_code(*k) == kind)
            .ok_or_else(|| format!("bad candidate kind {kind}"))?;
        let class = self.u8()?;
        let class = AddressClass::ALL
            .into_iter()
            .find(|c| class_code(*c) == class)
            .ok_or_else(|| format!("bad address class {class}"))?;
        Ok(Candidate { addr, kind, class })
    }

    /// Ends reading: every byte must have been used.
    pub(crate) fn finish(self) -> DecResult<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(format!("{} unexpected trailing bytes", self.buf.len()))
        }
    }
}

fn kind_code(k: CandidateKind) -> u8 {
    match k {
        CandidateKind::Host => 1,
        CandidateKind::ServerReflexive => 2,
        CandidateKind::Mapped => 3,
    }
}

fn class_code(c: AddressClass) -> u8 {
    match c {
        AddressClass::Public => 1,
        AddressClass::Cgnat => 2,
        AddressClass::Private => 3,
        AddressClass::LinkLocal => 4,
        AddressClass::Loopback => 5,
        AddressClass::Unroutable => 6,
    }
}

/// Unix seconds; times before 1970 count as 0.
pub(crate) fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The time `s` Unix seconds name.
pub(crate) fn time(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(s: &str, kind: CandidateKind) -> Candidate {
        let addr: SocketAddr = s.parse().unwrap();
        Candidate {
            addr,
            kind,
            class: AddressClass::of(addr.ip()),
        }
    }

    #[test]
    fn candidates_round_trip_exactly() {
        let v6 = SocketAddrV6::new("2001:db8::7".parse().unwrap(), 7447, 9, 3);
        let cands = [
            cand("203.0.113.7:7447", CandidateKind::Host),
            cand("100.64.1.2:1", CandidateKind::Mapped),
            cand("[fd00::1]:65535", CandidateKind::ServerReflexive),
            Candidate {
                addr: SocketAddr::V6(v6),
                kind: CandidateKind::Host,
                class: AddressClass::Public,
            },
        ];
        let mut e = Enc::new();
        for c in &cands {
            e.candidate(c);
        }
        e.str("héllo");
        let bytes = e.finish();
        let mut d = Dec::new(&bytes).unwrap();
        for c in &cands {
            assert_eq!(d.candidate().unwrap(), *c);
        }
        assert_eq!(d.str().unwrap(), "héllo");
        d.finish().unwrap();
    }

    #[test]
    fn short_trailing_and_unknown_versions_are_errors() {
        let bytes = Enc::new().u64(7).finish();
        let mut d = Dec::new(&bytes[..5]).unwrap();
        assert!(d.u64().unwrap_err().contains("cut short"));
        let mut d = Dec::new(&bytes).unwrap();
        d.u32().unwrap();
        assert!(d.finish().unwrap_err().contains("trailing"));
        assert!(Dec::new(&[9, 0]).err().unwrap().contains("version 9"));
        assert!(Dec::new(&[]).err().unwrap().contains("empty"));
    }

    #[test]
    fn truncates_at_a_character_boundary() {
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(truncate("abc", 5), "abc");
    }
}
