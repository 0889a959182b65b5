//! `range`: the whole `cidr` is this node's (kubenet's podCIDR); no cluster store involved.

use super::{PickContext, PoolSource, Usage};
use crate::addr::{bounds, from_u128, max_prefix, to_u128};
use crate::allocate::{Picked, Step};
use crate::config::Pool;
use crate::error::IpamError;
use crate::model::BlockLease;
use crate::span::{host, Addresses, Reservation, Span};
use ipnet::IpNet;
use std::net::IpAddr;

pub(crate) struct RangeSource {
    pub pool: Pool,
    pub reservation: Reservation,
}

/// A `range` pool's span: `rangeStart`..`rangeEnd`, never its network, broadcast or gateway.
pub fn range_span(pool: &Pool, reservation: Reservation) -> Span {
    let net = pool.cidr();
    let v4 = pool.is_v4();
    let (lo, hi) = bounds(net);
    let gateway = range_gateway(pool);
    let mut reserved: Vec<IpNet> = vec![host(net.network()), host(gateway)];
    if v4 {
        reserved.push(host(net.broadcast()));
    }
    reserved.extend(pool.exclude.iter().copied());
    let first = pool.cfg.range_start.unwrap_or(from_u128(lo, v4));
    let last = pool.cfg.range_end.unwrap_or(from_u128(hi, v4));
    let (pod_prefix_len, gw) = match reservation {
        Reservation::GatewayPerBlock => (net.prefix_len(), Some(gateway)),
        Reservation::None => (max_prefix(v4), None),
    };
    Span { subnet: net, addresses: Addresses::Range { first, last }, reserved, gateway: gw, pod_prefix_len }
}

/// The range gateway: configured, else the first address after the network address.
fn range_gateway(pool: &Pool) -> IpAddr {
    let net = pool.cidr();
    pool.cfg.gateway.unwrap_or_else(|| from_u128(to_u128(net.network()) + 1, pool.is_v4()))
}

impl PoolSource for RangeSource {
    fn pool(&self) -> &Pool {
        &self.pool
    }

    fn pick(&self, step: Step, cx: &mut PickContext<'_, '_>) -> Result<Option<Picked>, IpamError> {
        if step != Step::Own {
            return Ok(None);
        }
        let span = range_span(&self.pool, self.reservation);
        Ok(span.pick(cx.used, cx.guard.cursor(self.pool.name())).map(|ip| Picked { span, ip, claim: None }))
    }

    fn leases_blocks(&self) -> bool {
        false
    }

    fn span_of(&self, ip: IpAddr, _: &[IpNet]) -> Option<Span> {
        self.pool.cidr().contains(&ip).then(|| range_span(&self.pool, self.reservation))
    }

    fn holds(&self, ip: IpAddr, _: &[IpNet]) -> bool {
        range_span(&self.pool, self.reservation).usable(ip)
    }

    fn usage(&self, _: &[BlockLease], _: &[IpNet], used: usize) -> Usage {
        let capacity = range_span(&self.pool, self.reservation).capacity();
        Usage { capacity, free_blocks: 0, node_blocks: Vec::new(), free: capacity.saturating_sub(used as u128) }
    }

    fn has_room(&self, used: usize) -> bool {
        range_span(&self.pool, self.reservation).capacity() > used as u128
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IpamConfig;
    use serde_json::{json, Value};
    use std::path::Path;

    fn parse(v: Value) -> Result<IpamConfig, IpamError> {
        IpamConfig::parse(&v, Some(Path::new("/tmp/x")))
    }

    #[test]
    fn range_span_keeps_network_broadcast_gateway_and_excludes() {
        let c = parse(
            json!({"node":"n","pools":[{"name":"r","cidr":"10.9.0.0/29","source":"range","exclude":["10.9.0.3"]}]}),
        )
        .unwrap();
        let s = range_span(&c.pools[0], Reservation::GatewayPerBlock);
        assert_eq!(s.gateway, Some("10.9.0.1".parse().unwrap()));
        assert_eq!(s.capacity(), 4); // .2 .4 .5 .6
        assert_eq!(s.pod_prefix_len, 29);
        let c = parse(json!({"node":"n","pools":[{"name":"r","cidr":"10.9.0.0/24","source":"range","rangeStart":"10.9.0.10","rangeEnd":"10.9.0.20","gateway":"10.9.0.254"}]})).unwrap();
        let s = range_span(&c.pools[0], Reservation::None);
        assert_eq!((s.capacity(), s.pod_prefix_len, s.gateway), (11, 32, None));
    }
}
