//! Port names as the bytes they are.
//!
//! Redis keys and kernel netdev names are byte strings: a CONFIG_DB key or
//! a netdev may hold bytes that are not UTF-8, and upstream (`std::string`)
//! carries them through unchanged, so we do too. A name is shared, not
//! copied: the interner hands out the same allocation for every message of
//! the same port, so the hot path allocates nothing per event.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

/// A port (or LAG) name: `Ethernet0`, `PortChannel1`, or any bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortName(Arc<[u8]>);

impl PortName {
    pub fn new(bytes: &[u8]) -> Self {
        PortName(Arc::from(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// For logs and metric labels: the name itself when it is UTF-8, else
    /// a lossy rendering (the Redis key keeps the real bytes).
    pub fn lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }
}

impl std::borrow::Borrow<[u8]> for PortName {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for PortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lossy())
    }
}

impl fmt::Debug for PortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.lossy())
    }
}

impl From<&str> for PortName {
    fn from(s: &str) -> Self {
        PortName::new(s.as_bytes())
    }
}

/// Hands out one shared [`PortName`] per distinct name.
#[derive(Default)]
pub struct Interner(HashSet<PortName>);

impl Interner {
    pub fn intern(&mut self, bytes: &[u8]) -> PortName {
        if let Some(name) = self.0.get(bytes) {
            return name.clone();
        }
        let name = PortName::new(bytes);
        self.0.insert(name.clone());
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_shares_one_allocation_per_name() {
        let mut interner = Interner::default();
        let a = interner.intern(b"Ethernet0");
        let b = interner.intern(b"Ethernet0");
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert_ne!(a, interner.intern(b"Ethernet4"));
    }

    #[test]
    fn bytes_that_are_not_utf8_survive() {
        let name = PortName::new(b"Ethernet\xff0");
        assert_eq!(name.as_bytes(), b"Ethernet\xff0");
        assert_eq!(name.to_string(), "Ethernet\u{fffd}0");
    }
}
