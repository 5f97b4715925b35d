//! Connections per client address: one host may not take every slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Open connections counted per address key (IPv4 address, IPv6 /64).
#[derive(Default)]
pub(super) struct PerIp {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in the per-address count; given back on drop.
pub(super) struct IpSlot {
    table: Arc<PerIp>,
    key: IpAddr,
}

impl PerIp {
    /// Takes a place for `key` if it holds fewer than `max` connections.
    pub(super) fn try_take(self: &Arc<Self>, key: IpAddr, max: usize) -> Option<IpSlot> {
        let mut open = crate::sync::lock(&self.open);
        let count = open.entry(key).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            table: Arc::clone(self),
            key,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = crate::sync::lock(&self.table.open);
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_key_and_gives_back() {
        let table = Arc::new(PerIp::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = table.try_take(a, 2).unwrap();
        let _second = table.try_take(a, 2).unwrap();
        assert!(table.try_take(a, 2).is_none());
        assert!(table.try_take(b, 2).is_some());
        drop(first);
        assert!(table.try_take(a, 2).is_some());
    }
}
