//! Live `/connect` sockets per client address (`limits.max_connections_per_ip`): one address
//! cannot fill the node, however slowly it connects. A socket holds its address's slot from
//! before the upgrade until its connection task ends.

use std::net::IpAddr;
use std::sync::Arc;

use dashmap::DashMap;

/// Sockets held per address, with the bound.
pub struct IpSockets {
    max: usize,
    by_ip: DashMap<IpAddr, usize>,
}

/// One socket's slot; released when dropped.
pub struct IpSlot {
    owner: Arc<IpSockets>,
    ip: IpAddr,
}

impl IpSockets {
    /// At most `max` sockets per address.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            by_ip: DashMap::new(),
        }
    }

    /// A slot for one more socket from `ip`, or `None` when the address holds its maximum.
    pub fn try_hold(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut held = self.by_ip.entry(ip).or_insert(0);
        if *held >= self.max {
            return None;
        }
        *held += 1;
        Some(IpSlot {
            owner: self.clone(),
            ip,
        })
    }

    /// Sockets `ip` holds now.
    pub fn held(&self, ip: IpAddr) -> usize {
        self.by_ip.get(&ip).map_or(0, |n| *n)
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Some(mut held) = self.owner.by_ip.get_mut(&self.ip) {
            *held = held.saturating_sub(1);
        }
        // Forget the address once it holds nothing, so the map stays the size of the
        // addresses connected now.
        self.owner.by_ip.remove_if(&self.ip, |_, held| *held == 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_its_bound_and_slots_come_back() {
        let sockets = Arc::new(IpSockets::new(2));
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let first = sockets.try_hold(a).expect("first");
        let _second = sockets.try_hold(a).expect("second");
        assert!(sockets.try_hold(a).is_none());
        assert!(sockets.try_hold(b).is_some());
        drop(first);
        assert_eq!(sockets.held(a), 1);
        assert!(sockets.try_hold(a).is_some());
        drop(_second);
        assert_eq!(sockets.held(b), 0);
    }
}
