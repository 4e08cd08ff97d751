//! What STATE_DB `PORT_TABLE|<port>` holds of the four fields portsyncd
//! owns, as far as the daemon knows.
//!
//! Seeded by pipelined HMGETs at start-up (and again after Redis came
//! back), updated on every acknowledged write. With it the hot path sends
//! plain `HSET`s of the fields that changed, and a warm restart with nothing
//! changed sends nothing, without a script reading the row in Redis.

use std::collections::HashMap;

use crate::port_name::PortName;
use crate::sync::STATE_FIELDS;

/// Values of [`STATE_FIELDS`]; `None` where the row lacks the field.
pub type Row = [Option<Vec<u8>>; 4];

#[derive(Default)]
pub struct StateImage {
    rows: HashMap<PortName, Row>,
}

impl StateImage {
    /// Records what Redis says the row holds (an HMGET reply).
    pub fn seed(&mut self, port: PortName, row: Row) {
        self.rows.insert(port, row);
    }

    /// Indexes of the fields to write so the row holds `values`: those
    /// that differ, or all four when `full`. A port never seen counts as
    /// a row without our fields.
    pub fn changes(&self, port: &PortName, values: &[Vec<u8>; 4], full: bool) -> Vec<usize> {
        let row = self.rows.get(port);
        (0..STATE_FIELDS.len())
            .filter(|&i| full || row.and_then(|r| r[i].as_deref()) != Some(values[i].as_slice()))
            .collect()
    }

    /// Redis acknowledged an HSET of `fields` (indexes) to `values`.
    pub fn written(&mut self, port: &PortName, values: &[Vec<u8>; 4], fields: &[usize]) {
        let row = self.rows.entry(port.clone()).or_default();
        for &i in fields {
            row[i] = Some(values[i].clone());
        }
    }

    /// Redis acknowledged a DEL of the row.
    pub fn deleted(&mut self, port: &PortName) {
        self.rows.insert(port.clone(), Row::default());
    }

    /// Ports the image knows, for a re-seed.
    pub fn ports(&self) -> Vec<PortName> {
        self.rows.keys().cloned().collect()
    }

    pub fn clear(&mut self) {
        self.rows.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(admin: &str) -> [Vec<u8>; 4] {
        [
            b"ok".to_vec(),
            b"up".to_vec(),
            admin.as_bytes().to_vec(),
            b"9100".to_vec(),
        ]
    }

    #[test]
    fn only_fields_that_differ_are_written() {
        let mut image = StateImage::default();
        let p = PortName::from("Ethernet0");
        assert_eq!(image.changes(&p, &values("up"), false), vec![0, 1, 2, 3]);
        image.written(&p, &values("up"), &[0, 1, 2, 3]);
        assert!(image.changes(&p, &values("up"), false).is_empty());
        assert_eq!(image.changes(&p, &values("down"), false), vec![2]);
        assert_eq!(image.changes(&p, &values("up"), true).len(), 4);
        image.deleted(&p);
        assert_eq!(image.changes(&p, &values("up"), false).len(), 4);
    }

    #[test]
    fn a_seeded_row_with_other_values_is_corrected() {
        let mut image = StateImage::default();
        let p = PortName::from("Ethernet0");
        image.seed(
            p.clone(),
            [Some(b"ok".to_vec()), None, None, Some(b"1500".to_vec())],
        );
        assert_eq!(image.changes(&p, &values("up"), false), vec![1, 2, 3]);
    }
}
