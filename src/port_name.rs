//! Port names as the bytes they are.
//!
//! Redis keys and kernel netdev names are byte strings: a CONFIG_DB key or
//! a netdev may hold bytes that are not UTF-8, and upstream (`std::string`)
//! carries them through unchanged, so we do too. A name is shared, not
//! copied: the port's record owns the one allocation, found by the message's
//! bytes, so the hot path allocates nothing per event.

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

impl std::ops::Deref for PortName {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_are_not_utf8_survive() {
        let name = PortName::new(b"Ethernet\xff0");
        assert_eq!(name.as_bytes(), b"Ethernet\xff0");
        assert_eq!(name.to_string(), "Ethernet\u{fffd}0");
    }
}
